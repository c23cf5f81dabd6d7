//! Kubernetes robustness (issue 11): an offline member's last addresses stay as down targets,
//! the host API coming back is reported only once the watches are live, and records meridian
//! refuses get a condition instead of a DNSEndpoint. Same harness as `k8s.rs` (its helpers).

use super::*;

fn record_path(ns: &str, name: &str) -> String {
    path(
        "multiclusterdns.kubefed.io/v1alpha1",
        "ServiceDNSRecord",
        Some(ns),
        Some(name),
    )
}

fn endpoint_path(ns: &str, name: &str) -> String {
    path(
        "multiclusterdns.kubefed.io/v1alpha1",
        "DNSEndpoint",
        Some(ns),
        Some(name),
    )
}

/// The record's `Valid` condition, once it has one.
fn valid_condition(h: &Kc, ns: &str, name: &str) -> Option<Value> {
    status_of(h, ns, name)?["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Valid")
        .cloned()
}

/// Issue 11, item 8: a member whose API server is gone past `--member-offline-after` is down,
/// not empty: a name only it serves still answers with its last known address under the
/// default all-down policy (`all`), while the written status shows it empty, as KubeFed did.
#[test]
fn kubernetes_offline_member_keeps_last_addresses_as_down() {
    let _serial = serial();
    let mut fed = Fed::start();
    let h = fed.host.admin();
    // "solo" exists only in west; "web" in both.
    fed.web_in(&fed.east, &["192.0.2.1"], true);
    fed.web_in(&fed.west, &["192.0.2.2"], true);
    let w = fed.west.admin();
    w.apply(&lb_service("shop", "solo"));
    set_service_lb(&w, "shop", "solo", &["192.0.2.7"]);
    w.apply(&slice("shop", "solo", true));
    register_member(&h, &fed.east, json!({}));
    register_member(&h, &fed.west, json!({}));
    h.apply(&service_record("shop", "web", json!({})));
    h.apply(&service_record("shop", "solo", json!({})));
    let s = meridian(fed.zones.path(), &fed.kubeconfig(), "replica-a");
    let q = s.q();
    await_answer(
        &s,
        &q,
        &global("solo"),
        RecordType::A,
        &["192.0.2.7"],
        Duration::from_secs(20),
    );
    wait_for(Duration::from_secs(10), "solo's status written", || {
        status_of(&h, "shop", "solo").filter(|st| {
            st["dns"].as_array().is_some_and(|d| {
                d.iter().any(|e| {
                    e["cluster"] == "west"
                        && e["loadBalancer"]["ingress"] == json!([{"ip": "192.0.2.7"}])
                })
            })
        })
    });

    // The member's API server dies (no graceful shutdown).
    let killed = Instant::now();
    fed.west.kill();
    wait_for(Duration::from_secs(20), "west offline", || {
        (metric(
            &s.metrics(),
            "meridian_kubernetes_member_up",
            &[("cluster", "west")],
        ) == 0.0)
            .then_some(())
    });
    // Written: west kept, empty (KubeFed's offline cluster).
    let st = wait_for(Duration::from_secs(10), "solo: west written empty", || {
        status_of(&h, "shop", "solo").filter(|st| {
            st["dns"].as_array().is_some_and(|d| {
                d.iter()
                    .any(|e| e["cluster"] == "west" && e["loadBalancer"].get("ingress").is_none())
            })
        })
    });
    eprintln!(
        "member killed -> offline and written empty: {} ms (grace 2 s): {st}",
        killed.elapsed().as_millis()
    );
    // Served: west's last address, as a down target; all-down=all answers with it.
    let m = q.ask(&global("solo"), RecordType::A);
    assert_eq!(
        m.response_code,
        ResponseCode::NoError,
        "{}",
        tail(&s.log_text())
    );
    assert_eq!(
        addrs(&m),
        vec!["192.0.2.7".to_string()],
        "an offline member's only name answers with its last known address (all-down=all)\n{}",
        tail(&s.log_text())
    );
    // A name with a healthy cluster left answers with that one only, its region too.
    await_answer(
        &s,
        &q,
        &global("web"),
        RecordType::A,
        &["192.0.2.1"],
        Duration::from_secs(5),
    );
    await_answer(
        &s,
        &q,
        &regional("web", "us-west1"),
        RecordType::A,
        &[&format!("cname:{}", global("web")), "192.0.2.1"],
        Duration::from_secs(5),
    );
    // all-down=empty now applies as it does to an unready member: no address.
    h.apply(&json!({"apiVersion": "multiclusterdns.kubefed.io/v1alpha1", "kind": "ServiceDNSRecord",
        "metadata": {"name": "solo", "namespace": "shop", "annotations": {"meridian.io/all-down": "empty"}},
        "spec": {"domainRef": "fed", "recordTTL": 60}}));
    await_answer(
        &s,
        &q,
        &global("solo"),
        RecordType::A,
        &[],
        Duration::from_secs(5),
    );
}

/// Issue 11, item 9: after the host API server comes back, `source_up` turns 1 only once the
/// watches have relisted (it does not flap back to 0 on a `410 Gone` met afterwards), and a
/// change reaches the answers at once. Lags are printed, not asserted.
#[test]
fn kubernetes_host_api_back_source_up_only_when_live() {
    let _serial = serial();
    let env = Env::start();
    let mut host = env.clusters(&["host"]).pop().expect("host");
    let h = host.admin();
    apply_deploy(&h);
    h.apply(&domain("fed", ZONE));
    h.apply(&namespace("shop"));
    let endpoint = |ip: &str| {
        json!({"apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint",
               "metadata": {"name": "app", "namespace": "shop"},
               "spec": {"endpoints": [{"dnsName": format!("app.{ZONE}"), "recordType": "A", "targets": [ip]}]}})
    };
    h.apply(&endpoint("192.0.2.10"));
    let zones = tempfile::tempdir().expect("zones");
    let s = meridian(
        zones.path(),
        &host.kubeconfig(env.dir.path(), MERIDIAN_TOKEN),
        "replica-a",
    );
    let q = s.q();
    let name = format!("app.{ZONE}.");
    await_answer(
        &s,
        &q,
        &name,
        RecordType::A,
        &["192.0.2.10"],
        Duration::from_secs(10),
    );
    let up = |s: &Server| {
        metric(
            &s.metrics(),
            "meridian_source_up",
            &[("source", "kubernetes")],
        )
    };
    wait_for(Duration::from_secs(10), "source up", || {
        (up(&s) == 1.0).then_some(())
    });

    // Away (etcd stays), history compacted so the watches' resource versions are gone: the
    // old watches would resume into `410 Gone`.
    host.stop();
    wait_for(Duration::from_secs(15), "source down", || {
        (up(&s) == 0.0).then_some(())
    });
    env.compact();
    host.restart(&env);
    // A change the moment the server is back, before meridian has seen it.
    h.apply(&endpoint("192.0.2.11"));
    let back = Instant::now();
    wait_for(Duration::from_secs(30), "source up again", || {
        (up(&s) == 1.0).then_some(())
    });
    let up_after = back.elapsed();
    let t_up = Instant::now();
    let first = shape(&q.ask(&name, RecordType::A));
    // Once up, it stays up: "1" was not said before the watches were live.
    let mut flaps = 0;
    let mut answered: Option<Duration> = (first == ["192.0.2.11"]).then_some(Duration::ZERO);
    while t_up.elapsed() < Duration::from_secs(8) {
        if up(&s) != 1.0 {
            flaps += 1;
        }
        if answered.is_none() && shape(&q.ask(&name, RecordType::A)) == ["192.0.2.11"] {
            answered = Some(t_up.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "host API back -> source_up 1: {} ms; first answer then: {first:?}; change made before recovery answered {} ms after source_up 1",
        up_after.as_millis(),
        answered.map_or("never (8 s)".to_string(), |d| d.as_millis().to_string())
    );
    assert_eq!(
        flaps,
        0,
        "source_up went back to 0 after saying 1: it said 1 before the watches were live\n{}",
        tail(&s.log_text())
    );
    await_answer(
        &s,
        &q,
        &name,
        RecordType::A,
        &["192.0.2.11"],
        Duration::from_secs(1),
    );
    // The first change after recovery.
    let t = Instant::now();
    h.apply(&endpoint("192.0.2.12"));
    await_answer(
        &s,
        &q,
        &name,
        RecordType::A,
        &["192.0.2.12"],
        Duration::from_secs(1),
    );
    eprintln!(
        "first kubernetes change after recovery -> DNS answer: {} ms",
        t.elapsed().as_millis()
    );
    assert!(
        s.log_text().contains("relisting") || s.log_text().contains("watch recovered"),
        "the recovery is logged"
    );
}

/// Issue 11, item 10: a record meridian refuses (an invalid `meridian.io/*` annotation) gets a
/// `Valid=False` condition naming the field, and no `service-<name>` DNSEndpoint (the one
/// written while it was valid is deleted); fixed, the DNSEndpoint is back and `Valid=True`.
#[test]
fn kubernetes_invalid_record_gets_condition_and_no_dnsendpoint() {
    let _serial = serial();
    let fed = Fed::start();
    let h = fed.host.admin();
    fed.web_in(&fed.east, &["192.0.2.1"], true);
    register_member(&h, &fed.east, json!({}));
    let with_policy = |name: &str, policy: &str| {
        json!({"apiVersion": "multiclusterdns.kubefed.io/v1alpha1", "kind": "ServiceDNSRecord",
               "metadata": {"name": name, "namespace": "shop",
                            "annotations": {"meridian.io/policy": policy}},
               "spec": {"domainRef": "fed", "recordTTL": 60}})
    };
    // "web" starts valid, "bad" invalid from its creation.
    h.apply(&with_policy("web", "geo"));
    h.apply(&with_policy("bad", "bogus"));
    let s = meridian(fed.zones.path(), &fed.kubeconfig(), "replica-a");
    await_answer(
        &s,
        &s.q(),
        &global("web"),
        RecordType::A,
        &["192.0.2.1"],
        Duration::from_secs(20),
    );
    wait_for(Duration::from_secs(15), "service-web written", || {
        h.get(&endpoint_path("shop", "service-web"))
    });
    let ok = wait_for(Duration::from_secs(10), "web: Valid=True", || {
        valid_condition(&h, "shop", "web").filter(|c| c["status"] == "True")
    });
    eprintln!("valid record condition: {ok}");
    let bad = wait_for(Duration::from_secs(10), "bad: Valid=False", || {
        valid_condition(&h, "shop", "bad").filter(|c| c["status"] == "False")
    });
    eprintln!("invalid record condition: {bad}");
    assert_eq!(bad["reason"], "InvalidAnnotation");
    let msg = bad["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("meridian.io/policy") && msg.contains("bogus"),
        "the message names the field and value: {msg}"
    );
    // The leader has written everything it plans (web's DNSEndpoint and both statuses): had it
    // planned service-bad, it would be there by now.
    wait_for(Duration::from_secs(10), "no planned writes", || {
        (metric(&s.metrics(), "meridian_kubernetes_planned_writes", &[]) == 0.0).then_some(())
    });
    assert!(
        h.get(&endpoint_path("shop", "service-bad")).is_none(),
        "no DNSEndpoint for a refused record"
    );
    let bad_status = status_of(&h, "shop", "bad").expect("status");
    assert!(
        bad_status.get("dns").is_none(),
        "no addresses published for a refused record: {bad_status}"
    );

    // A valid record turns invalid: its DNSEndpoint goes, the condition says why.
    h.apply(&with_policy("web", "bogus"));
    wait_for(Duration::from_secs(10), "web: Valid=False", || {
        valid_condition(&h, "shop", "web").filter(|c| c["status"] == "False")
    });
    wait_for(Duration::from_secs(10), "service-web deleted", || {
        h.get(&endpoint_path("shop", "service-web"))
            .is_none()
            .then_some(())
    });
    // Fixed: the DNSEndpoint is back and the condition flips to True.
    h.apply(&with_policy("web", "failover"));
    wait_for(Duration::from_secs(10), "service-web back", || {
        h.get(&endpoint_path("shop", "service-web"))
    });
    let fixed = wait_for(Duration::from_secs(10), "web: Valid=True again", || {
        valid_condition(&h, "shop", "web").filter(|c| c["status"] == "True")
    });
    assert_eq!(fixed["reason"], "Accepted");
    assert!(
        status_of(&h, "shop", "web").is_some_and(|st| st["dns"][0]["cluster"] == "east"),
        "status filled again"
    );
    // The record itself is untouched by all this.
    assert!(h.get(&record_path("shop", "web")).is_some());
}

/// Issue 11, item 11: replicas starting together race for the fresh Lease; exactly one may
/// lead. (kube-lease-manager takes an orphaned Lease by server-side apply without force, which
/// refuses a second taker only if the two use different field managers; meridian gave every
/// replica the same one, and both "won".) Several rounds, both replicas started at once.
#[test]
fn kubernetes_leader_election_simultaneous_start() {
    let _serial = serial();
    let env = Env::start();
    let host = env.clusters(&["host"]).pop().expect("host");
    let h = host.admin();
    apply_deploy(&h);
    let kc = host.kubeconfig(env.dir.path(), MERIDIAN_TOKEN);
    let zones = tempfile::tempdir().expect("zones");
    let leader = |s: &Server| metric(&s.metrics(), "meridian_leader", &[]);
    let lease = path(
        "coordination.k8s.io/v1",
        "Lease",
        Some("meridian"),
        Some("meridian"),
    );
    for round in 0..4 {
        h.delete(&lease);
        let barrier = std::sync::Barrier::new(2);
        let (a, b) = std::thread::scope(|sc| {
            let start = |id: &'static str| {
                let (barrier, zones, kc) = (&barrier, zones.path(), kc.as_path());
                sc.spawn(move || {
                    barrier.wait();
                    meridian(zones, kc, id)
                })
            };
            let a = start("replica-a");
            let b = start("replica-b");
            (a.join().expect("start a"), b.join().expect("start b"))
        });
        // Long enough for a second "winner" to notice at its first renewal (lease 3 s,
        // grace 1 s): a double leadership shows here.
        let t = Instant::now();
        let mut led = false;
        while t.elapsed() < Duration::from_secs(4) {
            let (x, y) = (leader(&a), leader(&b));
            assert!(
                x + y <= 1.0,
                "round {round}: two leaders at once\n{}\n{}",
                tail(&a.log_text()),
                tail(&b.log_text())
            );
            led |= x + y == 1.0;
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(led, "round {round}: nobody led");
        if round == 0 {
            lease_taken_only_once(&h, &lease);
        }
        for mut s in [a, b] {
            s.signal("TERM");
            s.wait_exit(Duration::from_secs(10));
        }
    }
}

/// The mechanism the election rests on, checked deterministically against the API server: the
/// holder took the Lease by a server-side apply under a field manager of its own, so the other
/// replica's apply of `holderIdentity` (same protocol, its own manager, no force) is refused
/// with a conflict instead of silently making a second leader.
fn lease_taken_only_once(h: &Kc, lease_path: &str) {
    let lease = h.get(lease_path).expect("lease");
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .expect("a holder")
        .to_string();
    let other = if holder == "replica-a" {
        "replica-b"
    } else {
        "replica-a"
    };
    let manager = lease["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["operation"] == "Apply" && m["fieldsV1"]["f:spec"].get("f:holderIdentity").is_some()
        })
        .and_then(|m| m["manager"].as_str())
        .expect("an applied holderIdentity")
        .to_string();
    assert!(
        manager.contains(&holder),
        "the Lease was taken under field manager {manager:?}, shared by every replica: a second \
         replica's apply would not conflict"
    );
    let theirs = manager.replace(&holder, other);
    let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "meridian", "namespace": "meridian"},
        "spec": {"holderIdentity": other, "leaseDurationSeconds": 3}});
    let (code, v) = h.call(
        "PATCH",
        &format!("{lease_path}?fieldManager={theirs}"),
        Some(("application/apply-patch+yaml", body.to_string())),
    );
    assert_eq!(code, 409, "a second taker must conflict: {v}");
}
