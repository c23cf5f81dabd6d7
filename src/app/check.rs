//! `meridian check`: load the zones directory as `serve` would and list every problem, or say
//! what it holds.

use super::cli::SourceArgs;
use crate::source::file::load::{error_summary, load};

pub fn check(args: &SourceArgs) -> i32 {
    match load(&args.paths()) {
        Ok(l) => {
            let c = &l.compiled;
            println!(
                "ok: {} files, {} zones, {} federated names, {} clusters, {} static names{}",
                l.files.len(),
                c.zones.len(),
                c.dyns.len(),
                c.clusters.len(),
                c.nodes.len() - c.dyns.len(),
                l.geo
                    .as_ref()
                    .map(|g| format!(", GeoIP {} ({})", g.path().display(), g.database_type()))
                    .unwrap_or_default()
            );
            0
        }
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            eprintln!("{}", error_summary(&errs, &args.zones));
            1
        }
    }
}
