//! Loading the zones directory as a whole: parse ([`super::load_dir`]), validate the
//! configuration and the catalog, open the GeoIP database, compile. Errors are the lines
//! `meridian check` prints, in file order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Parsed;
use crate::catalog::{self, Inputs};
use crate::geo::GeoDb;
use crate::snapshot::compile::{self, Compiled};
use crate::snapshot::publisher::FileInputs;
use crate::source::SourceError;

/// Where the file source reads from: the zones directory and, overriding the configuration's
/// `geoip`, a GeoIP database.
#[derive(Debug, Clone)]
pub struct Paths {
    pub zones: PathBuf,
    pub geoip: Option<PathBuf>,
}

/// Everything loaded from the zones directory, validated and compiled.
pub struct Loaded {
    pub compiled: Compiled,
    pub geo: Option<Arc<GeoDb>>,
    pub files: Vec<PathBuf>,
    /// The file source's fragment, for the publisher to merge with other sources.
    pub inputs: FileInputs,
}

/// Loads, validates and compiles a zones directory. Errors are the lines `check` prints.
pub fn load(paths: &Paths) -> Result<Loaded, Vec<String>> {
    load_with(paths, false)
}

/// As [`load`]; with `other_sources` (Kubernetes) the directory may be missing or hold no zone,
/// since Domains can come from the API server.
pub fn load_with(paths: &Paths, other_sources: bool) -> Result<Loaded, Vec<String>> {
    load_watched(paths, other_sources).0
}

/// As [`load_with`], also returning every file the load read or tried to (zone, YAML and
/// included files, the GeoIP database), failed or not: the file watcher watches them.
pub fn load_watched(
    paths: &Paths,
    other_sources: bool,
) -> (Result<Loaded, Vec<String>>, Vec<PathBuf>) {
    let (parsed, mut errors) = if other_sources && !paths.zones.exists() {
        (Parsed::default(), Vec::new())
    } else {
        super::load_dir(&paths.zones)
    };
    if other_sources {
        errors.retain(|e| !e.message.starts_with("cannot read directory"));
    }
    // Errors with a place (file errors, the configuration's, the catalog's), put in file order
    // below; then the GeoIP database's.
    let mut sourced = errors;
    let mut errs: Vec<String> = Vec::new();
    let settings = match &parsed.config {
        Some(c) => match c.value.validate(&paths.zones) {
            Ok(s) => s,
            Err(e) => {
                let e = SourceError::new(c.location.clone(), e.to_string());
                sourced.push(super::at_field_line(&e));
                Default::default()
            }
        },
        None => Default::default(),
    };
    let geo_path = paths.geoip.clone().or_else(|| settings.geoip.clone());
    // Named by where the path came from, and told apart from the zones' errors.
    let geo_origin = || match (&paths.geoip, &parsed.config) {
        (Some(_), _) => "--geoip".to_string(),
        (None, Some(c)) => format!("{}: spec.geoip", c.location),
        (None, None) => "geoip".to_string(),
    };
    let mut watched = parsed.files.clone();
    watched.extend(geo_path.clone());
    let geo = match &geo_path {
        Some(p) if !p.is_file() => {
            errs.push(format!(
                "{}: {GEOIP_PROBLEM} {} does not exist",
                geo_origin(),
                p.display()
            ));
            None
        }
        Some(p) => match GeoDb::open(p) {
            Ok(g) => Some(Arc::new(g)),
            Err(e) => {
                // `e` names the path and says "GeoIP database" itself.
                errs.push(format!("{}: {e}", geo_origin()));
                None
            }
        },
        None => None,
    };
    let inputs = Inputs {
        zone_files: parsed.zone_files,
        objects: parsed.objects,
        unready: Default::default(),
    };
    // Objects refused by the file source's strict checks are still built here, only so that
    // their other problems are reported too: any error fails the load.
    let (cat, cat_errors) = catalog::build_from(
        &inputs.zone_files,
        &[&inputs.objects, &parsed.refused],
        &inputs.unready,
        &settings,
    );
    sourced.extend(cat_errors.iter().map(super::at_field_line));
    sourced.sort_by_cached_key(super::error_order);
    errs.splice(0..0, sourced.iter().map(|e| e.to_string()));
    if cat.zones.is_empty() && errs.is_empty() && !other_sources {
        errs.push(format!(
            "{}: no zones: add a *.zone file or a Domain object",
            paths.zones.display()
        ));
    }
    if !errs.is_empty() {
        return (Err(errs), watched);
    }
    let compiled = match compile::compile(cat, settings.clone()) {
        Ok(c) => c,
        Err(e) => return (Err(vec![e.to_string()]), watched),
    };
    let loaded = Ok(Loaded {
        compiled,
        geo: geo.clone(),
        files: parsed.files,
        inputs: FileInputs {
            zone_files: inputs.zone_files,
            objects: inputs.objects,
            settings,
            geo,
        },
    });
    (loaded, watched)
}

/// Marks the GeoIP database's error among `load`'s, for the summary line.
const GEOIP_PROBLEM: &str = "GeoIP database";

/// The last line after `load`'s errors: the zones' errors counted, a GeoIP problem named apart.
pub fn error_summary(errs: &[String], zones: &Path) -> String {
    let geo = errs.iter().any(|e| e.contains(GEOIP_PROBLEM));
    let others = errs.len() - usize::from(geo);
    match (others, geo) {
        (0, true) => "the GeoIP database cannot be used".to_string(),
        (n, true) => format!(
            "{n} error(s) in {} and the GeoIP database cannot be used",
            zones.display()
        ),
        (n, false) => format!("{n} error(s) in {}", zones.display()),
    }
}
