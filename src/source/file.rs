//! The file source: RFC 1035 zone files (`*.zone`) and multi-document YAML (`*.yaml`, `*.yml`)
//! holding KubeFed / external-dns objects and an optional `MeridianConfig`.
//!
//! Every problem is reported with the file and line (zone files, YAML syntax) or the file,
//! document, object and field (YAML objects); loading goes on past errors so `meridian check`
//! can list them all at once.
//!
//! The layers, one way: this file parses a directory's files one by one ([`Parsed`]);
//! [`load`] validates and compiles the whole directory ([`load::Loaded`]); [`reload`] runs the
//! load again on SIGHUP or when [`poll`] sees a served file change, and sends the result to the
//! publisher.

pub mod load;
mod poll;
pub mod reload;

use std::path::{Path, PathBuf};

use hickory_proto::rr::{Name, Record};
use hickory_proto::serialize::txt::{LexerError, ParseError, Parser};

use super::include::{self, Expanded};
use super::lint;
use super::read::{self, MAX_FILE_BYTES};
use super::{Located, SourceError, message_at, typed_at, yaml_depth};
use crate::catalog;
use crate::config::RawConfig;
use crate::model::{self, Object};

/// What one directory holds, each file parsed on its own; [`load::Loaded`] is the whole
/// directory validated and compiled.
#[derive(Debug, Default)]
pub struct Parsed {
    pub config: Option<Located<RawConfig>>,
    pub objects: Vec<Located<Object>>,
    pub zone_files: Vec<ZoneFile>,
    /// Every file read, for change detection.
    pub files: Vec<PathBuf>,
    /// Objects that decoded but failed the strict checks (their errors are reported): not to be
    /// served, only checked further so that every problem of an object is listed at once.
    pub refused: Vec<Located<Object>>,
}

#[derive(Debug, Clone)]
pub struct ZoneFile {
    pub path: PathBuf,
    pub origin: Name,
    pub records: Vec<Record>,
}

/// Reads every zone and YAML file directly in `dir` (sorted by name, so results are stable).
pub fn load_dir(dir: &Path) -> (Parsed, Vec<SourceError>) {
    let mut loaded = Parsed::default();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            errors.push(SourceError::new(
                dir.display().to_string(),
                format!("cannot read directory: {e}"),
            ));
            return (loaded, errors);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        // Special files (FIFOs, devices) are kept, for the reader to refuse by name; dangling
        // links and directories are not served files.
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| !m.is_dir()))
        .collect();
    paths.sort();
    for path in paths {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "zone" => {
                loaded.files.push(path.clone());
                match load_zone_file(&path, dir, &mut loaded.files) {
                    Ok(z) => loaded.zone_files.push(z),
                    Err(e) => errors.push(e),
                }
            }
            "yaml" | "yml" => {
                loaded.files.push(path.clone());
                match read::read_text(&path, MAX_FILE_BYTES) {
                    Ok(text) => match yaml_depth::check(&text) {
                        Ok(()) => load_yaml(&path, &text, &mut loaded, &mut errors),
                        Err(line) => errors.push(SourceError::new(
                            format!("{}:{line}", path.display()),
                            format!(
                                "invalid YAML: nested deeper than {} levels",
                                yaml_depth::MAX_FLOW_DEPTH
                            ),
                        )),
                    },
                    Err(e) => {
                        errors.push(SourceError::new(path.display().to_string(), e.to_string()))
                    }
                }
            }
            _ => {}
        }
    }
    (loaded, errors)
}

/// Parses one zone file of the zones directory `root`; its origin is the file name without
/// `.zone` unless `$ORIGIN` says otherwise. Files it `$INCLUDE`s are added to `watched`.
pub fn load_zone_file(
    path: &Path,
    root: &Path,
    watched: &mut Vec<PathBuf>,
) -> Result<ZoneFile, SourceError> {
    let loc = path.display().to_string();
    let text = read::read_text(path, MAX_FILE_BYTES)
        .map_err(|e| SourceError::new(loc.clone(), e.to_string()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let origin = Name::from_ascii(stem).map_err(|e| {
        SourceError::new(
            loc.clone(),
            format!("file name {stem:?} is not a zone name: {e}"),
        )
    })?;
    let expanded = include::expand(path, &text, root, watched)?;
    parse_zone_text(&expanded, path, origin)
}

/// Parses a zone file's text, its `$INCLUDE`s expanded: hickory is given no path, so it could
/// not open a file even if one were left.
pub fn parse_zone_text(
    expanded: &Expanded,
    path: &Path,
    origin: Name,
) -> Result<ZoneFile, SourceError> {
    let text = expanded.text.as_str();
    match Parser::new(text, None, Some(origin)).parse() {
        Ok((origin, sets)) => {
            let records = sets
                .into_values()
                .flat_map(|set| set.records_without_rrsigs().cloned().collect::<Vec<_>>())
                .collect();
            Ok(ZoneFile {
                path: path.to_path_buf(),
                origin,
                records,
            })
        }
        Err(e) => {
            let line = error_line(text, path);
            Err(SourceError::new(expanded.location(line), e.to_string()))
        }
    }
}

/// hickory's zone parser reports no line numbers; find the first line at which a prefix of the
/// file stops parsing (a prefix cut inside a `( … )` group or a quoted string is incomplete, not
/// wrong). Only runs on the error path.
fn error_line(text: &str, path: &Path) -> usize {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let fails = |n: usize| -> bool {
        let prefix: String = lines[..n].concat();
        match Parser::new(prefix, Some(path.to_path_buf()), Some(Name::root())).parse() {
            Ok(_) => false,
            Err(ParseError::Lexer(LexerError::UnclosedList))
            | Err(ParseError::Lexer(LexerError::UnclosedQuotedString))
            | Err(ParseError::Lexer(LexerError::EOF)) => false,
            Err(_) => true,
        }
    };
    // Smallest n whose prefix fails; the parser is sequential, so failure is monotone in n.
    let (mut lo, mut hi) = (1, lines.len().max(1));
    if !fails(hi) {
        return hi;
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi
}

/// Line numbers (1-based) at which each YAML document starts.
fn document_lines(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            starts.push(i + 2);
            seen_content = true;
        } else if !seen_content && !trimmed.is_empty() && !trimmed.starts_with('#') {
            starts.push(i + 1);
            seen_content = true;
        }
    }
    if starts.is_empty() {
        starts.push(1);
    }
    starts
}

fn load_yaml(path: &Path, text: &str, loaded: &mut Parsed, errors: &mut Vec<SourceError>) {
    use serde::Deserialize;
    let file = path.display().to_string();
    let starts = document_lines(text);
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let line = starts.get(i).copied().unwrap_or(1);
        let value = match serde_norway::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                let l = e.location().map(|l| l.line()).unwrap_or(line);
                errors.push(SourceError::new(
                    format!("{file}:{l}"),
                    format!("invalid YAML: {e}"),
                ));
                // A syntax error ends the stream: the parser cannot resynchronise.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let here = format!("{file}:{line}");
        // Strict checks first: a typo in a file must not vanish silently.
        let kind = field_str(&value, "kind").unwrap_or_default().to_string();
        let mut findings = lint::unknown_fields(&kind, &value);
        // The catalog checks records' and clusters' annotations (from every source); others'
        // here, and everyone's when the object does not decode (the catalog never sees it).
        let metadata = value.get("metadata").cloned();
        let annotation_findings = || lint::annotations(&kind, metadata.as_ref());
        let config_name = format!(
            "MeridianConfig {}",
            value
                .get("metadata")
                .and_then(|m| field_str(m, "name"))
                .unwrap_or_default()
        );
        match decode_object(value) {
            Ok(Decoded::Object(obj)) => {
                if !catalog::checks_annotations(&kind) {
                    findings.extend(annotation_findings());
                }
                let located = Located {
                    location: format!("{here} ({})", obj.display_name()),
                    value: *obj,
                };
                if findings.is_empty() {
                    loaded.objects.push(located);
                } else {
                    let object = located.value.display_name();
                    report(file.as_str(), text, line, &object, findings, errors);
                    loaded.refused.push(located);
                }
            }
            Ok(Decoded::Config(_)) if !findings.is_empty() => {
                report(
                    file.as_str(),
                    text,
                    line,
                    config_name.trim_end(),
                    findings,
                    errors,
                );
            }
            Ok(Decoded::Config(cfg)) => {
                let cfg = *cfg;
                if let Some(prev) = &loaded.config {
                    errors.push(SourceError::new(
                        here,
                        format!("a second MeridianConfig; the first is at {}", prev.location),
                    ));
                } else {
                    loaded.config = Some(Located {
                        location: here,
                        value: cfg,
                    });
                }
            }
            Err(DecodeError {
                object,
                message,
                path,
            }) => match object {
                Some(o) => {
                    let mut all = findings;
                    all.extend(annotation_findings());
                    all.push(lint::Finding {
                        path: path.map(|p| lint::parse_path(&p)).unwrap_or_default(),
                        message,
                    });
                    report(file.as_str(), text, line, &o, all, errors);
                }
                None => errors.push(SourceError::new(here, message)),
            },
        }
    }
}

/// Reports every problem of one object, each at the line of its field (else the document's
/// first line), in file order.
fn report(
    file: &str,
    text: &str,
    doc_line: usize,
    object: &str,
    findings: Vec<lint::Finding>,
    errors: &mut Vec<SourceError>,
) {
    let doc = document_text(text, doc_line);
    let mut located: Vec<(usize, String)> = findings
        .into_iter()
        .map(|f| {
            let at = lint::locate(&doc, doc_line, &f.path).unwrap_or(doc_line);
            (at, f.message)
        })
        .collect();
    located.sort_by_key(|(at, _)| *at);
    for (at, message) in located {
        errors.push(SourceError::new(format!("{file}:{at} ({object})"), message));
    }
}

/// An error about an object from a file (`file:line (Kind ns/name)`, found after loading, e.g.
/// by the catalog) moved to the line of the field its message starts with. Only runs on the
/// error path; anything else is returned as it is.
pub fn at_field_line(e: &SourceError) -> SourceError {
    let refined = || -> Option<SourceError> {
        let (head, object) = match e.location.split_once(" (") {
            Some((h, o)) => (h, Some(o)),
            None => (e.location.as_str(), None),
        };
        let (file, line) = head.rsplit_once(':')?;
        let line: usize = line.parse().ok()?;
        let (field, _) = e.message.split_once(": ")?;
        let path = lint::parse_field_path(field)?;
        let text = std::fs::read_to_string(file).ok()?;
        let at = lint::locate(&document_text(&text, line), line, &path)?;
        let location = match object {
            Some(o) => format!("{file}:{at} ({o}"),
            None => format!("{file}:{at}"),
        };
        Some(SourceError::new(location, e.message.clone()))
    };
    refined().unwrap_or_else(|| e.clone())
}

/// Sort key putting errors in file order: file, then line (0 for a file-wide error); errors
/// without a file (`records`, `configuration`) sort by that word.
pub fn error_order(e: &SourceError) -> (String, usize) {
    let head = e
        .location
        .split_once(" (")
        .map_or(e.location.as_str(), |(h, _)| h);
    match head.rsplit_once(':') {
        Some((file, line)) if line.parse::<usize>().is_ok() => {
            (file.to_string(), line.parse().unwrap_or(0))
        }
        _ => (head.to_string(), 0),
    }
}

/// The lines of the document starting at 1-based line `first`, up to the next `---`.
fn document_text(text: &str, first: usize) -> Vec<&str> {
    text.lines()
        .skip(first.saturating_sub(1))
        .take_while(|l| {
            let t = l.trim_end();
            t != "---" && !t.starts_with("--- ") && t != "..."
        })
        .collect()
}

enum Decoded {
    Object(Box<Object>),
    Config(Box<RawConfig>),
}

struct DecodeError {
    object: Option<String>,
    message: String,
    /// Field path of a type error, to find its line.
    path: Option<String>,
}

fn field_str<'a>(v: &'a serde_norway::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|x| x.as_str())
}

/// Decodes one YAML document (also used for JSON objects from the API server).
fn decode_object(value: serde_norway::Value) -> Result<Decoded, DecodeError> {
    let api_version = field_str(&value, "apiVersion")
        .unwrap_or_default()
        .to_string();
    let kind = field_str(&value, "kind").unwrap_or_default().to_string();
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| field_str(m, "name"))
        .unwrap_or_default()
        .to_string();
    let namespace = meta
        .and_then(|m| field_str(m, "namespace"))
        .map(|n| format!("{n}/"))
        .unwrap_or_default();
    let object = Some(format!("{kind} {namespace}{name}"));
    let fail = |message: String| DecodeError {
        object: object.clone(),
        message,
        path: None,
    };
    let fail_at = |(path, message): (String, String)| DecodeError {
        object: object.clone(),
        message: message_at(&path, &message),
        path: Some(path),
    };
    if kind.is_empty() {
        return Err(DecodeError {
            object: None,
            message: "kind: missing".to_string(),
            path: None,
        });
    }
    if name.is_empty() && kind != "MeridianConfig" {
        return Err(fail("metadata.name: missing".to_string()));
    }
    let obj = match (api_version.as_str(), kind.as_str()) {
        (model::GROUP_MULTICLUSTERDNS, "Domain") => {
            Object::Domain(typed_at(value).map_err(fail_at)?)
        }
        (model::GROUP_MULTICLUSTERDNS, "ServiceDNSRecord") => {
            Object::ServiceDNSRecord(typed_at(value).map_err(fail_at)?)
        }
        (model::GROUP_MULTICLUSTERDNS, "IngressDNSRecord") => {
            Object::IngressDNSRecord(typed_at(value).map_err(fail_at)?)
        }
        (model::GROUP_MULTICLUSTERDNS | model::GROUP_EXTERNALDNS, "DNSEndpoint") => {
            Object::DNSEndpoint(typed_at(value).map_err(fail_at)?)
        }
        (model::GROUP_KUBEFED_CORE, "KubeFedCluster") => {
            Object::KubeFedCluster(typed_at(value).map_err(fail_at)?)
        }
        (model::GROUP_MERIDIAN, "MeridianConfig") => {
            let spec = value
                .get("spec")
                .cloned()
                .unwrap_or(serde_norway::Value::Null);
            let spec = if spec.is_null() {
                serde_norway::Value::Mapping(Default::default())
            } else {
                spec
            };
            let cfg: RawConfig = typed_at(spec).map_err(|(p, m)| {
                let path = if p == "." {
                    "spec".to_string()
                } else {
                    format!("spec.{p}")
                };
                DecodeError {
                    object: object.clone(),
                    message: format!("{path}: {m}"),
                    path: Some(path),
                }
            })?;
            return Ok(Decoded::Config(Box::new(cfg)));
        }
        (av, k) => {
            return Err(fail(format!(
                "apiVersion/kind: unsupported {av:?} {k:?} (expected Domain, ServiceDNSRecord, \
                 IngressDNSRecord or DNSEndpoint of {}, DNSEndpoint of {}, KubeFedCluster of {}, \
                 or MeridianConfig of {})",
                model::GROUP_MULTICLUSTERDNS,
                model::GROUP_EXTERNALDNS,
                model::GROUP_KUBEFED_CORE,
                model::GROUP_MERIDIAN
            )));
        }
    };
    Ok(Decoded::Object(Box::new(obj)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_one(name: &str, text: &str) -> (Parsed, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(name), text).expect("write");
        let (l, e) = load_dir(dir.path());
        let prefix = format!("{}/", dir.path().display());
        (
            l,
            e.iter()
                .map(|e| e.to_string().replace(&prefix, ""))
                .collect(),
        )
    }

    #[test]
    fn zone_file_error_names_the_line() {
        let text = "$TTL 300\n@ IN SOA ns1 host ( 1 7200 3600 1209600 60 )\n@ IN NS ns1\nns1 IN A 192.0.2.1\nwww IN A 300.1.2.3\nok IN A 192.0.2.2\n";
        let (_, errs) = load_one("example.com.zone", text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("example.com.zone:5: "), "{errs:?}");
    }

    #[test]
    fn zone_file_parses_with_origin_from_file_name() {
        let text =
            "$TTL 300\n@ IN SOA ns1 host 1 7200 3600 1209600 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\n";
        let (l, errs) = load_one("example.com.zone", text);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(l.zone_files[0].origin.to_string(), "example.com.");
        assert_eq!(l.zone_files[0].records.len(), 3);
    }

    #[test]
    fn yaml_errors_name_document_object_and_field() {
        let text = "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: Domain\nmetadata: {name: d}\ndomain: example.com\n---\n# second\napiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\nmetadata: {name: web, namespace: shop}\nspec:\n  domainRef: d\n  recordTTL: soon\n";
        let (l, errs) = load_one("objs.yaml", text);
        assert_eq!(l.objects.len(), 1);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "objs.yaml:12 (ServiceDNSRecord shop/web): spec.recordTTL: invalid type"
            ),
            "{errs:?}"
        );
    }

    /// Issue 12: typos were accepted and their effect silently dropped; now every problem of
    /// the object is reported, in file order, at the line of its field.
    #[test]
    fn typos_are_errors_at_their_line_all_of_them_in_order() {
        let text = "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    meridian.io/probe-pth: /healthz\n    meridian.io/fall: \"0\"\nspec:\n  domainRef: d\n  dnsPrefx: www\n  recordTTL: soon\n";
        let (l, errs) = load_one("t.yaml", text);
        assert!(l.objects.is_empty(), "a record with errors is left out");
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "t.yaml:7 (ServiceDNSRecord shop/web): metadata.annotations[\"meridian.io/probe-pth\"]: unknown annotation"
            ),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with(
                "t.yaml:8 (ServiceDNSRecord shop/web): metadata.annotations[\"meridian.io/fall\"]: \"0\" is not a number"
            ),
            "{errs:?}"
        );
        assert!(
            errs[2]
                .starts_with("t.yaml:11 (ServiceDNSRecord shop/web): spec.dnsPrefx: unknown field"),
            "{errs:?}"
        );
        assert!(
            errs[3]
                .starts_with("t.yaml:12 (ServiceDNSRecord shop/web): spec.recordTTL: invalid type"),
            "{errs:?}"
        );
    }

    #[test]
    fn external_dns_endpoint_extras_are_accepted_in_files() {
        let text = "apiVersion: externaldns.k8s.io/v1alpha1\nkind: DNSEndpoint\nmetadata: {name: e, namespace: n}\nspec:\n  endpoints:\n  - dnsName: a.example.com\n    targets: [192.0.2.1]\n    setIdentifier: eu\n    labels: {owner: x}\n    providerSpecific:\n    - {name: aws/weight, value: \"10\"}\n";
        let (l, errs) = load_one("e.yaml", text);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(l.objects.len(), 1);
    }

    #[test]
    fn unknown_kind_and_syntax_errors() {
        let (_, errs) = load_one("a.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n");
        assert!(errs[0].contains("unsupported \"v1\" \"Pod\""), "{errs:?}");
        let (_, errs) = load_one("b.yaml", "kind: [unclosed\n");
        assert!(errs[0].starts_with("b.yaml:"), "{errs:?}");
        assert!(errs[0].contains("invalid YAML"), "{errs:?}");
        // Deep flow nesting is refused before the parser, whose scanner is quadratic in it.
        let (_, errs) = load_one("b.yaml", &format!("a: 1\nb: {}", "{a: ".repeat(100_000)));
        assert_eq!(
            errs,
            vec!["b.yaml:2: invalid YAML: nested deeper than 128 levels".to_string()]
        );
        let (_, errs) = load_one("b.yaml", "kind: [unclosed\n");
        assert!(errs[0].starts_with("b.yaml:"), "{errs:?}");
        assert!(errs[0].contains("invalid YAML"), "{errs:?}");
    }

    #[test]
    fn config_document() {
        let (l, errs) = load_one(
            "c.yaml",
            "apiVersion: meridian.io/v1alpha1\nkind: MeridianConfig\nspec:\n  maxDynamicTTL: 20\n",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(l.config.expect("config").value.max_dynamic_ttl, Some(20));
        let (_, errs) = load_one(
            "c.yaml",
            "apiVersion: meridian.io/v1alpha1\nkind: MeridianConfig\nspec:\n  maxTTL: 20\n",
        );
        assert!(
            errs[0].contains("spec.maxTTL") || errs[0].contains("unknown field `maxTTL`"),
            "{errs:?}"
        );
    }
}
