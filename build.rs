//! Build metadata for `meridian --version` and `meridian_build_info`: the commit (from git, or
//! `MERIDIAN_COMMIT` where the build has no `.git`, e.g. a container build) and the compiler.

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MERIDIAN_COMMIT");
    let commit = std::env::var("MERIDIAN_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| output("git", &["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Rebuild when HEAD moves: HEAD itself (checkout) and the branch it names (commit).
    // Only paths that exist: a missing one would make cargo rerun this script every build.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(r) = output("git", &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(r);
    }
    for w in watch {
        if let Some(p) = output("git", &["rev-parse", "--git-path", &w])
            && std::path::Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = output(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=MERIDIAN_COMMIT={commit}");
    println!("cargo:rustc-env=MERIDIAN_RUSTC={version}");
}
