//! The client commands (`drain`, `undrain`, `state`, `explain`): each asks the running server
//! through the one admin client ([`crate::client::AdminClient`]) and prints its answer;
//! `explain` without `--admin` answers from the zones directory instead.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use super::cli::{DrainArgs, ExplainArgs, StateArgs, UndrainArgs};
use crate::admin;
use crate::client::{AdminClient, ClientError, rfc3339, state_table};
use crate::snapshot::Snapshot;
use crate::source::file::load::load;

pub fn drain(a: DrainArgs) -> Result<i32> {
    let client = a.conn.client()?;
    let length = a.duration.map(crate::model::format_duration);
    let who = a.who.clone().unwrap_or_else(local_who);
    let reply = client_reply(client.drain(
        &a.cluster,
        &a.records,
        length.as_deref(),
        a.reason.as_deref(),
        &who,
    ))?;
    let Some(v) = reply else { return Ok(1) };
    if a.json {
        print_json(&v);
    } else {
        let until = match v["until"].as_f64() {
            Some(u) => format!("until {}", rfc3339(u)),
            None => "until undrained".to_string(),
        };
        let why = v["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let object = v["object"]
            .as_str()
            .map(|o| format!(" (Drain {o})"))
            .unwrap_or_default();
        let scope = if a.records.is_empty() {
            String::new()
        } else {
            format!(" for {}", a.records.join(", "))
        };
        println!("drained {}{scope} {until}{why}{object}", a.cluster);
    }
    Ok(0)
}

pub fn undrain(a: UndrainArgs) -> Result<i32> {
    let cluster = a
        .cluster
        .ok_or_else(|| anyhow!("undrain needs a cluster name"))?;
    let client = a.conn.client()?;
    let who = a.who.clone().unwrap_or_else(local_who);
    let reply = client_reply(client.undrain(&cluster, &a.records, &who))?;
    let Some(v) = reply else { return Ok(1) };
    if a.json {
        print_json(&v);
    } else {
        let deleted: Vec<&str> = v["deleted"]
            .as_array()
            .map(|d| d.iter().filter_map(|o| o.as_str()).collect())
            .unwrap_or_default();
        if deleted.is_empty() {
            println!("undrained {cluster}");
        } else {
            println!("undrained {cluster} (deleted Drain {})", deleted.join(", "));
        }
    }
    Ok(0)
}

pub fn state(a: StateArgs) -> Result<i32> {
    let client = a.conn.client()?;
    let Some(v) = client_reply(client.state())? else {
        return Ok(1);
    };
    if a.json {
        print_json(&v);
    } else {
        let _ = write!(std::io::stdout(), "{}", state_table(&v));
    }
    Ok(0)
}

pub fn explain(args: ExplainArgs) -> Result<i32> {
    let e = if let Some(admin) = &args.admin {
        let client = AdminClient::new(admin, args.admin_token.as_deref())?;
        let reply = client.explain(&args.name, &args.qtype, &args.client.to_string());
        let Some(v) = client_reply(reply)? else {
            return Ok(1);
        };
        let e: crate::explain::Explanation =
            serde_json::from_value(v).context("unexpected explain response")?;
        e
    } else {
        let loaded = match load(&args.source.paths()) {
            Ok(l) => l,
            Err(errs) => {
                for e in &errs {
                    eprintln!("error: {e}");
                }
                return Ok(1);
            }
        };
        let snap = Snapshot::new(Arc::new(loaded.compiled), loaded.geo);
        crate::explain::explain(&snap, &args.name, &args.qtype, args.client)?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{e}");
    }
    Ok(0)
}

/// A refusal by the server (4xx/5xx) is the command's answer, printed, exit 1; not reaching it
/// or an unreadable reply is an error.
fn client_reply(r: Result<Value, ClientError>) -> Result<Option<Value>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e @ ClientError::Status { .. }) => {
            eprintln!("{e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn print_json(v: &Value) {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// `$USER@host`: who runs this command, for drains' logs, objects and Events.
fn local_who() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        // SAFETY: getuid has no preconditions and cannot fail.
        .or_else(|| (unsafe { libc::getuid() } == 0).then(|| "root".to_string()))
        .unwrap_or_else(|| "unknown".to_string());
    format!("{user}@{}", admin::instance_name())
}
