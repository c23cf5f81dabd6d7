//! Strict checks of objects read from files, beyond what their serde types enforce: unknown
//! fields and unknown or malformed `meridian.io/*` annotations, each reported at the line of the
//! offending field so that `meridian check` points at the typo.
//!
//! The serde types stay lenient because the API server shares them: external-dns' `DNSEndpoint`
//! is a superset of KubeFed's, and an apiserver with structural schemas prunes unknown fields
//! anyway. A file, on the other hand, is written by hand, and a misspelt field there silently
//! drops what it asks for.

use serde_norway::Value;

use crate::catalog;

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A problem at a field: its path (to find its line) and the message (naming the field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub path: Vec<Seg>,
    pub message: String,
}

/// The fields a value may hold.
enum Shape {
    Any,
    Map(&'static [(&'static str, Shape)]),
    List(&'static Shape),
}

use Shape::{Any, List, Map};

const META: Shape = Map(&[
    ("name", Any),
    ("namespace", Any),
    ("labels", Any),
    ("annotations", Any),
    ("uid", Any),
    ("resourceVersion", Any),
    ("generation", Any),
    ("generateName", Any),
    ("creationTimestamp", Any),
    ("deletionTimestamp", Any),
    ("deletionGracePeriodSeconds", Any),
    ("finalizers", Any),
    ("managedFields", Any),
    ("ownerReferences", Any),
    ("selfLink", Any),
]);
const LB_INGRESS: Shape = Map(&[
    ("ip", Any),
    ("hostname", Any),
    ("ipMode", Any),
    ("ports", Any),
]);
const LB: Shape = Map(&[("ingress", List(&LB_INGRESS))]);
const SERVICE_RECORD: Shape = Map(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", META),
    (
        "spec",
        Map(&[
            ("domainRef", Any),
            ("recordTTL", Any),
            ("dnsPrefix", Any),
            ("externalName", Any),
            ("allowServiceWithoutEndpoints", Any),
        ]),
    ),
    (
        "status",
        Map(&[
            ("domain", Any),
            (
                "dns",
                List(&Map(&[
                    ("cluster", Any),
                    ("region", Any),
                    ("zones", Any),
                    ("loadBalancer", LB),
                ])),
            ),
        ]),
    ),
]);
const INGRESS_RECORD: Shape = Map(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", META),
    ("spec", Map(&[("hosts", Any), ("recordTTL", Any)])),
    (
        "status",
        Map(&[("dns", List(&Map(&[("cluster", Any), ("loadBalancer", LB)])))]),
    ),
]);
/// external-dns' endpoint fields included (`setIdentifier`, `providerSpecific`, `labels`).
const ENDPOINT: Shape = Map(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", META),
    (
        "spec",
        Map(&[(
            "endpoints",
            List(&Map(&[
                ("dnsName", Any),
                ("targets", Any),
                ("recordType", Any),
                ("recordTTL", Any),
                ("labels", Any),
                ("setIdentifier", Any),
                ("providerSpecific", Any),
            ])),
        )]),
    ),
    ("status", Any),
]);
const DOMAIN: Shape = Map(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", META),
    ("domain", Any),
    ("nameServer", Any),
]);
const CLUSTER: Shape = Map(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", META),
    (
        "spec",
        Map(&[
            ("apiEndpoint", Any),
            ("caBundle", Any),
            ("secretRef", Map(&[("name", Any)])),
            ("disabledTLSValidations", Any),
            ("disabledTlsValidations", Any),
            ("proxyURL", Any),
        ]),
    ),
    ("status", Any),
]);

/// Its `spec` is checked by `RawConfig` itself (`deny_unknown_fields`).
const CONFIG: Shape = Map(&[
    ("apiVersion", Any),
    ("kind", Any),
    ("metadata", META),
    ("spec", Any),
]);

fn shape_of(kind: &str) -> Option<&'static Shape> {
    Some(match kind {
        "MeridianConfig" => &CONFIG,
        "ServiceDNSRecord" => &SERVICE_RECORD,
        "IngressDNSRecord" => &INGRESS_RECORD,
        "DNSEndpoint" => &ENDPOINT,
        "Domain" => &DOMAIN,
        "KubeFedCluster" => &CLUSTER,
        _ => return None,
    })
}

fn path_text(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn walk(value: &Value, shape: &Shape, path: &mut Vec<Seg>, out: &mut Vec<Finding>) {
    match (shape, value) {
        (Map(fields), Value::Mapping(m)) => {
            for (k, v) in m {
                let Some(key) = k.as_str() else { continue };
                path.push(Seg::Key(key.to_string()));
                match fields.iter().find(|(name, _)| *name == key) {
                    Some((_, inner)) => walk(v, inner, path, out),
                    None => out.push(Finding {
                        message: format!(
                            "{}: unknown field (expected {})",
                            path_text(path),
                            fields
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        path: path.clone(),
                    }),
                }
                path.pop();
            }
        }
        (List(inner), Value::Sequence(items)) => {
            for (i, v) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                walk(v, inner, path, out);
                path.pop();
            }
        }
        // Wrong types are the serde decoder's to report.
        _ => {}
    }
}

/// Unknown fields and bad `meridian.io/*` annotations of one document of `kind`, in document
/// order (annotations in key order).
pub fn lint(kind: &str, value: &Value) -> Vec<Finding> {
    let mut out = unknown_fields(kind, value);
    out.extend(annotations(kind, value.get("metadata")));
    out
}

/// Unknown fields of one document of `kind`, in document order.
pub fn unknown_fields(kind: &str, value: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(shape) = shape_of(kind) {
        walk(value, shape, &mut Vec::new(), &mut out);
    }
    out
}

/// Unknown or malformed `meridian.io/*` annotations in a document's `metadata`, in key order.
/// The metadata is decoded on its own, so that a type error elsewhere in the object does not
/// hide an annotation typo.
pub fn annotations(kind: &str, metadata: Option<&Value>) -> Vec<Finding> {
    let Some(meta) = metadata.and_then(|m| serde_norway::from_value(m.clone()).ok()) else {
        return Vec::new();
    };
    catalog::annotation_errors(kind, &meta)
        .into_iter()
        .map(|(key, message)| Finding {
            path: vec![
                Seg::Key("metadata".into()),
                Seg::Key("annotations".into()),
                Seg::Key(key),
            ],
            message,
        })
        .collect()
}

/// Parses a field path as serde_path_to_error and meridian's messages write it:
/// `spec.endpoints[0].dnsName`, `metadata.annotations["meridian.io/probe"]`. None if `text` is
/// not a path.
pub fn parse_field_path(text: &str) -> Option<Vec<Seg>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars();
    let flush = |cur: &mut String, out: &mut Vec<Seg>| {
        if !cur.is_empty() {
            out.push(Seg::Key(std::mem::take(cur)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '.' => flush(&mut cur, &mut out),
            '[' => {
                flush(&mut cur, &mut out);
                let inner: String = chars.by_ref().take_while(|c| *c != ']').collect();
                match inner.strip_prefix('"').and_then(|i| i.strip_suffix('"')) {
                    Some(key) => out.push(Seg::Key(key.to_string())),
                    None => out.push(Seg::Index(inner.parse().ok()?)),
                }
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '-' | '/') => cur.push(c),
            _ => return None,
        }
    }
    flush(&mut cur, &mut out);
    (!out.is_empty()).then_some(out)
}

/// As [`parse_field_path`], empty for the whole value (`.`) or anything else.
pub fn parse_path(text: &str) -> Vec<Seg> {
    parse_field_path(text).unwrap_or_default()
}

/// A content line of block YAML: indentation, whether it is a sequence item, and its key (after
/// any `- `), unquoted.
struct Line<'a> {
    indent: usize,
    dash: bool,
    /// Column of the key (after `- ` on an item line).
    key_col: usize,
    key: Option<&'a str>,
}

fn scan(line: &str) -> Option<Line<'_>> {
    let body = line.trim_start();
    if body.is_empty() || body.starts_with('#') || body == "---" || body.starts_with("--- ") {
        return None;
    }
    let indent = line.len() - body.len();
    let (dash, rest) = match body.strip_prefix('-') {
        Some(r) if r.is_empty() || r.starts_with(' ') => (true, r.trim_start()),
        _ => (false, body),
    };
    let key_col = line.len() - rest.len();
    let key = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => rest[1..].find(q).map(|end| &rest[1..1 + end]),
        _ => rest
            .find(": ")
            .or_else(|| rest.strip_suffix(':').map(|r| r.len()))
            .map(|end| rest[..end].trim_end()),
    };
    Some(Line {
        indent,
        dash,
        key_col,
        key,
    })
}

/// The 1-based line (within `lines`, numbered from `first`) of the field at `path`, for block
/// YAML; the deepest enclosing field found when the rest is written in flow style (`{…}`).
pub fn locate(lines: &[&str], first: usize, path: &[Seg]) -> Option<usize> {
    let scanned: Vec<Option<Line>> = lines.iter().map(|l| scan(l)).collect();
    let (mut lo, mut hi) = (0usize, lines.len());
    // Column of the enclosing field's key; its children sit further right.
    let mut parent_col: Option<usize> = None;
    let mut found = None;
    for seg in path {
        match seg {
            Seg::Key(k) => {
                let mut child_col = None;
                let mut hit = None;
                for (i, l) in scanned.iter().enumerate().take(hi).skip(lo) {
                    let Some(l) = l else { continue };
                    if parent_col.is_some_and(|p| l.key_col <= p) {
                        continue;
                    }
                    let col = *child_col.get_or_insert(l.key_col);
                    if l.key_col == col && l.key == Some(k.as_str()) {
                        hit = Some((i, l.key_col));
                        break;
                    }
                }
                // Not in block style below here (a flow mapping): the enclosing field's line.
                let Some((i, col)) = hit else { return found };
                found = Some(first + i);
                // The field's block: up to the next line at its level or left of it (a
                // sequence may sit at the key's own indentation).
                let end = scanned
                    .iter()
                    .enumerate()
                    .skip(i + 1)
                    .take(hi.saturating_sub(i + 1))
                    .find(|(_, l)| {
                        l.as_ref().is_some_and(|l| {
                            l.indent < col || (l.indent == col && !l.dash) || l.key_col < col
                        })
                    })
                    .map_or(hi, |(j, _)| j);
                lo = i + 1;
                hi = end;
                parent_col = Some(col);
            }
            Seg::Index(n) => {
                let items: Vec<(usize, usize)> = {
                    let mut dash_col = None;
                    scanned
                        .iter()
                        .enumerate()
                        .take(hi)
                        .skip(lo)
                        .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
                        .filter(|(_, l)| l.dash)
                        .filter(|(_, l)| *dash_col.get_or_insert(l.indent) == l.indent)
                        .map(|(i, l)| (i, l.indent))
                        .collect()
                };
                let Some(&(i, col)) = items.get(*n) else {
                    return found;
                };
                found = Some(first + i);
                let end = items.get(n + 1).map_or(hi, |(j, _)| *j);
                lo = i;
                hi = end;
                parent_col = Some(col);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "apiVersion: x\nkind: DNSEndpoint\nmetadata:\n  name: e\n  annotations:\n    meridian.io/probe-pth: /x\n    other: y\nspec:\n  endpoints:\n  - dnsName: a.example.com\n    targets: [192.0.2.1]\n  - dnsName: b.example.com\n    recordTyp: A\n    labels:\n      recordTyp: x\n";

    #[test]
    fn locates_fields_in_block_yaml() {
        let lines: Vec<&str> = DOC.lines().collect();
        let at = |p: &str| locate(&lines, 1, &parse_path(p));
        assert_eq!(at("kind"), Some(2));
        assert_eq!(at("spec.endpoints[1].recordTyp"), Some(13));
        assert_eq!(at("spec.endpoints[1].dnsName"), Some(12));
        assert_eq!(at("spec.endpoints[0].targets"), Some(11));
        assert_eq!(at("spec.endpoints[1].labels.recordTyp"), Some(15));
        let ann = vec![
            Seg::Key("metadata".into()),
            Seg::Key("annotations".into()),
            Seg::Key("meridian.io/probe-pth".into()),
        ];
        assert_eq!(locate(&lines, 1, &ann), Some(6));
        assert_eq!(at("spec.nothere"), Some(8), "the enclosing field");
        assert_eq!(at("nothere"), None);
        let flow: Vec<&str> = "kind: X\nmetadata:\n  annotations: {meridian.io/fall: \"0\"}\n"
            .lines()
            .collect();
        assert_eq!(locate(&flow, 1, &ann), Some(3));
    }

    #[test]
    fn field_paths() {
        assert_eq!(
            parse_field_path("metadata.annotations[\"meridian.io/probe\"]"),
            Some(vec![
                Seg::Key("metadata".into()),
                Seg::Key("annotations".into()),
                Seg::Key("meridian.io/probe".into()),
            ])
        );
        assert_eq!(
            parse_field_path("status.dns[2].zones"),
            Some(vec![
                Seg::Key("status".into()),
                Seg::Key("dns".into()),
                Seg::Index(2),
                Seg::Key("zones".into()),
            ])
        );
        assert_eq!(parse_field_path("CNAME loop"), None);
        assert_eq!(parse_field_path("."), None);
    }

    #[test]
    fn unknown_fields_keep_external_dns_extras() {
        let v: Value = serde_norway::from_str(DOC).expect("yaml");
        let msgs: Vec<String> = lint("DNSEndpoint", &v)
            .into_iter()
            .map(|f| f.message)
            .collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].starts_with("spec.endpoints[1].recordTyp: unknown field"));
        assert!(msgs[1].contains("meridian.io/probe-pth"));
        assert!(msgs[1].contains("DNSEndpoint takes no"), "{msgs:?}");
    }
}
