//! Issue 12, part 1: drains as durable, shared state. A drain asked of one replica is a `Drain`
//! object every replica applies, that survives a restart, ends by itself at its expiry, and is
//! announced with Kubernetes Events; invalid Drains are refused with a condition. Same harness
//! as `k8s.rs` (its helpers).

use super::*;

fn drain_path(name: Option<&str>) -> String {
    path("meridian.io/v1alpha1", "Drain", Some(FED_NS), name)
}

/// A Drain's condition of this type, once it has one.
fn drain_condition(h: &Kc, name: &str, kind: &str) -> Option<Value> {
    h.get(&drain_path(Some(name)))?["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

/// The reasons of the Events about a Drain object.
fn event_reasons(h: &Kc, drain: &str) -> Vec<String> {
    let list = h
        .get(&path("v1", "Event", Some(FED_NS), None))
        .expect("events");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["kind"] == "Drain" && e["involvedObject"]["name"] == drain)
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect()
}

/// RFC 3339 (whole seconds, UTC) of now + `secs` (negative: the past), from `date`.
fn rfc3339_in(secs: i64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("{secs} seconds"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .expect("date");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

fn drain_object(name: &str, cluster: &str, expires: Option<&str>) -> Value {
    let mut spec = json!({"cluster": cluster, "reason": "test", "requestedBy": "test@harness"});
    if let Some(e) = expires {
        spec["expiresAt"] = json!(e);
    }
    json!({"apiVersion": "meridian.io/v1alpha1", "kind": "Drain",
           "metadata": {"name": name, "namespace": FED_NS}, "spec": spec})
}

#[test]
fn kubernetes_drains_are_shared_durable_and_expire() {
    let _serial = serial();
    let fed = Fed::start();
    let h = fed.host.admin();
    fed.web_in(&fed.east, &["192.0.2.1"], true);
    fed.web_in(&fed.west, &["192.0.2.2"], true);
    register_member(&h, &fed.east, json!({}));
    register_member(&h, &fed.west, json!({}));
    h.apply(&service_record("shop", "web", json!({})));
    let kc = fed.kubeconfig();
    // Expired Drains are deleted 10 s after expiry here (1 h by default).
    let keep = ["--drain-keep-expired", "10s"];
    let mut a = meridian_with(fed.zones.path(), &kc, "replica-a", &keep);
    let b = meridian_with(fed.zones.path(), &kc, "replica-b", &keep);
    // New York's nearest is east, San Francisco's west.
    let ny = |s: &Server| s.q().ecs("198.51.100.0", 24);
    let sf = |s: &Server| s.q().ecs("192.0.2.0", 24);
    let web = global("web");
    for s in [&a, &b] {
        await_answer(
            s,
            &ny(s),
            &web,
            RecordType::A,
            &["192.0.2.1"],
            Duration::from_secs(20),
        );
        await_answer(
            s,
            &sf(s),
            &web,
            RecordType::A,
            &["192.0.2.2"],
            Duration::from_secs(2),
        );
    }

    // Drain through replica a; replica b follows through the Drain object.
    let started = Instant::now();
    let (code, out, err) = crate::common::run(&[
        "drain",
        "east",
        "--for",
        "10m",
        "--reason",
        "drill",
        "--who",
        "tester@ci",
        "--json",
        "--admin",
        &format!("http://{}", a.admin),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let reply: Value = serde_json::from_str(&out).expect("JSON reply");
    let object = reply["object"]
        .as_str()
        .expect("the reply names the object")
        .to_string();
    let name = object
        .strip_prefix(&format!("{FED_NS}/"))
        .expect("namespace/name")
        .to_string();
    assert_eq!(reply["appliedHere"], true, "{reply}");
    let took = await_answer(
        &b,
        &ny(&b),
        &web,
        RecordType::A,
        &["192.0.2.2"],
        Duration::from_secs(1),
    );
    eprintln!(
        "drain via replica a -> replica b answers without east: {} ms after the CLI started ({} ms after its reply)",
        (started.elapsed().saturating_sub(Duration::ZERO)).as_millis(),
        took.as_millis()
    );
    await_answer(
        &a,
        &ny(&a),
        &web,
        RecordType::A,
        &["192.0.2.2"],
        Duration::from_secs(1),
    );
    let d = h
        .get(&drain_path(Some(&name)))
        .expect("the Drain object exists");
    assert_eq!(d["spec"]["cluster"], "east");
    assert_eq!(d["spec"]["reason"], "drill");
    assert_eq!(d["spec"]["requestedBy"], "tester@ci");
    let expires = d["spec"]["expiresAt"].as_str().expect("expiresAt");
    assert!(expires.ends_with('Z'), "{expires}");
    assert!(event_reasons(&h, &name).contains(&"Drained".to_string()));
    // state, from the other replica: who, why, which object.
    let (code, body) = b.http("GET", "/api/v1/state");
    assert_eq!(code, 200);
    let st: Value = serde_json::from_str(&body).expect("state");
    let entry = &st["drains"]["east"];
    assert_eq!(entry["object"], object.as_str(), "{st}");
    assert_eq!(entry["requestedBy"], "tester@ci");
    assert_eq!(entry["reason"], "drill");
    assert!(entry["until"].as_f64().is_some() && entry["since"].as_f64().is_some());
    assert!(
        st["drainObjects"]
            .as_array()
            .expect("drainObjects")
            .iter()
            .any(|o| o["object"] == object.as_str() && o["state"] == "active"),
        "{st}"
    );

    // A restarted replica still applies the drain.
    drop(a);
    a = meridian_with(fed.zones.path(), &kc, "replica-a", &keep);
    wait_for(Duration::from_secs(20), "readyz", || {
        ready_ok(&a).then_some(())
    });
    await_answer(
        &a,
        &ny(&a),
        &web,
        RecordType::A,
        &["192.0.2.2"],
        Duration::from_secs(2),
    );

    // Undrain through replica b: both answer east again, the object is gone.
    let (code, out, err) = crate::common::run(&[
        "undrain",
        "east",
        "--who",
        "tester@ci",
        "--admin",
        &format!("http://{}", b.admin),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&object), "{out}");
    for s in [&a, &b] {
        await_answer(
            s,
            &ny(s),
            &web,
            RecordType::A,
            &["192.0.2.1"],
            Duration::from_secs(1),
        );
    }
    assert!(
        h.get(&drain_path(Some(&name))).is_none(),
        "the object is deleted"
    );
    assert!(event_reasons(&h, &name).contains(&"Undrained".to_string()));
    let (code, _, err) =
        crate::common::run(&["undrain", "east", "--admin", &format!("http://{}", b.admin)]);
    assert_eq!(code, 1);
    assert!(err.contains("not drained"), "{err}");
    // A second drill through replica b, whose client has made API calls already: the admin
    // API's round trip (create, Event, applied here), printed, not asserted.
    let cli = Instant::now();
    let (code, out, err) = crate::common::run(&[
        "drain",
        "east",
        "--for",
        "1m",
        "--admin",
        &format!("http://{}", b.admin),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    eprintln!(
        "second drain via replica b: CLI round trip {} ms",
        cli.elapsed().as_millis()
    );
    await_answer(
        &a,
        &ny(&a),
        &web,
        RecordType::A,
        &["192.0.2.2"],
        Duration::from_secs(1),
    );
    let cli = Instant::now();
    let (code, out, err) =
        crate::common::run(&["undrain", "east", "--admin", &format!("http://{}", b.admin)]);
    assert_eq!(code, 0, "{out}{err}");
    eprintln!(
        "undrain via replica b: CLI round trip {} ms",
        cli.elapsed().as_millis()
    );
    await_answer(
        &a,
        &ny(&a),
        &web,
        RecordType::A,
        &["192.0.2.1"],
        Duration::from_secs(1),
    );

    // The CRD refuses a Drain without an expiry; meridian refuses one in the past, one too far
    // ahead and one it cannot read, with a condition, a log line and a count, and applies none.
    let (code, v) = h.call(
        "POST",
        &drain_path(None),
        Some((
            "application/json",
            drain_object("no-expiry", "west", None).to_string(),
        )),
    );
    assert_eq!(code, 422, "expiresAt is required by the schema: {v}");
    for (n, e) in [
        ("past", rfc3339_in(-3600)),
        ("too-far", rfc3339_in(8 * 24 * 3600)),
        ("unreadable", "next tuesday".to_string()),
    ] {
        h.apply(&drain_object(n, "west", Some(&e)));
    }
    for (n, why) in [
        ("past", "not after the object's creation"),
        ("too-far", "more than 7 days"),
        ("unreadable", "not an RFC 3339 time"),
    ] {
        let c = wait_for(
            Duration::from_secs(20),
            &format!("{n}: Valid condition"),
            || drain_condition(&h, n, "Valid"),
        );
        assert_eq!(c["status"], "False", "{c}");
        assert!(
            c["message"].as_str().is_some_and(|m| m.contains(why)),
            "{n}: {c}"
        );
    }
    for s in [&a, &b] {
        assert_eq!(
            shape(&sf(s).ask(&web, RecordType::A)),
            vec!["192.0.2.2"],
            "invalid Drains are not applied"
        );
        assert!(
            metric(
                &s.metrics(),
                "meridian_drain_errors_total",
                &[("source", "kubernetes")]
            ) >= 3.0
        );
        assert!(s.log_text().contains("Drain object not applied"));
    }
    for n in ["past", "too-far", "unreadable"] {
        h.delete(&drain_path(Some(n)));
    }

    // A Drain made by hand (kubectl, GitOps) scoped to one record: only that record's names
    // lose the cluster; the leader announces it, and its deletion, with Events.
    for (m, ip) in [(&fed.east, "192.0.2.11"), (&fed.west, "192.0.2.12")] {
        let k = m.admin();
        k.apply(&lb_service("shop", "api"));
        set_service_lb(&k, "shop", "api", &[ip]);
        k.apply(&slice("shop", "api", true));
    }
    h.apply(&service_record("shop", "api", json!({})));
    let api = global("api");
    for s in [&a, &b] {
        await_answer(
            s,
            &sf(s),
            &api,
            RecordType::A,
            &["192.0.2.12"],
            Duration::from_secs(20),
        );
    }
    let mut canary = drain_object("canary", "west", Some(&rfc3339_in(600)));
    canary["spec"]["records"] = json!(["shop/web"]);
    h.apply(&canary);
    for s in [&a, &b] {
        await_answer(
            s,
            &sf(s),
            &web,
            RecordType::A,
            &["192.0.2.1"],
            Duration::from_secs(2),
        );
        assert_eq!(
            shape(&sf(s).ask(&api, RecordType::A)),
            vec!["192.0.2.12"],
            "a drain scoped to shop/web leaves shop/api on west"
        );
    }
    wait_for(
        Duration::from_secs(10),
        "Drained event (made by hand)",
        || {
            event_reasons(&h, "canary")
                .contains(&"Drained".to_string())
                .then_some(())
        },
    );
    let (_, body) = b.http("GET", "/api/v1/state");
    let st: Value = serde_json::from_str(&body).expect("state");
    let entry = &st["drains"]["west [shop/web]"];
    assert_eq!(entry["object"], format!("{FED_NS}/canary"), "{st}");
    assert_eq!(entry["records"], json!(["shop/web"]));
    assert!(st["drains"]["west"].is_null(), "{st}");
    assert!(
        a.log_text().contains("Drain object made outside meridian")
            || b.log_text().contains("Drain object made outside meridian"),
        "the leader logs who made it"
    );
    h.delete(&drain_path(Some("canary")));
    for s in [&a, &b] {
        await_answer(
            s,
            &sf(s),
            &web,
            RecordType::A,
            &["192.0.2.2"],
            Duration::from_secs(2),
        );
    }
    wait_for(
        Duration::from_secs(10),
        "Undrained event (deleted by hand)",
        || {
            event_reasons(&h, "canary")
                .contains(&"Undrained".to_string())
                .then_some(())
        },
    );
    // A malformed scope: not applied, with a condition naming the entry.
    let mut bad = drain_object("bad-scope", "west", Some(&rfc3339_in(600)));
    bad["spec"]["records"] = json!(["web"]);
    h.apply(&bad);
    let c = wait_for(
        Duration::from_secs(20),
        "bad-scope: Valid condition",
        || drain_condition(&h, "bad-scope", "Valid"),
    );
    assert_eq!(c["status"], "False", "{c}");
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.records[0]")),
        "{c}"
    );
    assert_eq!(shape(&sf(&a).ask(&web, RecordType::A)), vec!["192.0.2.2"]);
    h.delete(&drain_path(Some("bad-scope")));

    // A Drain made by hand with a short expiry applies, then stops applying by itself.
    h.apply(&drain_object("short", "west", Some(&rfc3339_in(4))));
    for s in [&a, &b] {
        await_answer(
            s,
            &sf(s),
            &web,
            RecordType::A,
            &["192.0.2.1"],
            Duration::from_secs(1),
        );
    }
    for s in [&a, &b] {
        await_answer(
            s,
            &sf(s),
            &web,
            RecordType::A,
            &["192.0.2.2"],
            Duration::from_secs(6),
        );
    }
    // The leader marks it expired and says so once; the object stays for `state` meanwhile.
    let c = wait_for(Duration::from_secs(20), "Expired condition", || {
        drain_condition(&h, "short", "Expired")
    });
    assert_eq!(c["status"], "True");
    assert!(
        event_reasons(&h, "short").contains(&"Drained".to_string()),
        "a Drain made by hand is announced too"
    );
    wait_for(Duration::from_secs(10), "DrainExpired event", || {
        event_reasons(&h, "short")
            .contains(&"DrainExpired".to_string())
            .then_some(())
    });
    let (_, body) = a.http("GET", "/api/v1/state");
    let st: Value = serde_json::from_str(&body).expect("state");
    assert!(st["drains"]["west"].is_null(), "{st}");
    assert!(
        st["drainObjects"]
            .as_array()
            .expect("drainObjects")
            .iter()
            .any(|o| o["object"] == format!("{FED_NS}/short") && o["state"] == "expired"),
        "{st}"
    );
    // The leader deletes it once it has been expired for --drain-keep-expired.
    wait_for(Duration::from_secs(30), "expired Drain deleted", || {
        h.get(&drain_path(Some("short"))).is_none().then_some(())
    });
    // (The log line may reach the test's reader a moment after the API server's reply.)
    wait_for(Duration::from_secs(5), "the leader logs the delete", || {
        (a.log_text().contains("expired Drain object deleted")
            || b.log_text().contains("expired Drain object deleted"))
        .then_some(())
    });
    // Each drain and undrain is announced once: the leader adds none for the admin API's.
    let reasons = event_reasons(&h, &name);
    for r in ["Drained", "Undrained"] {
        assert_eq!(
            reasons.iter().filter(|x| *x == r).count(),
            1,
            "{r}: {reasons:?}"
        );
    }
}
