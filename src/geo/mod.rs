//! Client and cluster locations: the GeoIP database (MaxMind DB format, held in memory) and
//! great-circle geometry. Lookups never touch the network or the disk.

pub mod tables;

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GeoError {
    #[error("{}: cannot open GeoIP database: {source}", path.display())]
    Read {
        path: PathBuf,
        source: crate::source::read::ReadError,
    },
    #[error("{}: cannot open GeoIP database: {source}", path.display())]
    Open {
        path: PathBuf,
        source: maxminddb::MaxMindDbError,
    },
    #[error("{}: corrupt GeoIP database: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: maxminddb::MaxMindDbError,
    },
    #[error("{}: corrupt GeoIP database: the record of {network} does not decode: {source}", path.display())]
    Record {
        path: PathBuf,
        network: String,
        source: maxminddb::MaxMindDbError,
    },
}

/// Distinct records decoded as the query path decodes them when a database is opened, beyond
/// the full structural check; every record of a Country database, a sample of a City one.
const RECORDS_CHECKED: usize = 20_000;

/// A point on the globe, degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

const EARTH_RADIUS_KM: f64 = 6371.0;

impl GeoPoint {
    pub fn new(lat: f64, lon: f64) -> Option<GeoPoint> {
        ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) && lat.is_finite())
            .then_some(GeoPoint { lat, lon })
    }

    /// Parses `"lat,lon"` as written in the `meridian.io/location` annotation.
    pub fn parse(s: &str) -> Result<GeoPoint, String> {
        let bad = || format!("invalid location {s:?} (expected \"lat,lon\" in degrees)");
        let (a, b) = s.split_once(',').ok_or_else(bad)?;
        let lat: f64 = a.trim().parse().map_err(|_| bad())?;
        let lon: f64 = b.trim().parse().map_err(|_| bad())?;
        GeoPoint::new(lat, lon).ok_or_else(bad)
    }

    /// Unit vector on the sphere: ordering by dot product equals ordering by great-circle
    /// distance, so the query path needs no trigonometry per candidate.
    pub fn unit(&self) -> [f64; 3] {
        let (la, lo) = (self.lat.to_radians(), self.lon.to_radians());
        [la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()]
    }

    /// Great-circle distance (haversine), kilometres.
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        let (la1, la2) = (self.lat.to_radians(), other.lat.to_radians());
        let dla = la2 - la1;
        let dlo = (other.lon - self.lon).to_radians();
        let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

/// Chord-based distance from a dot product of unit vectors, kilometres.
pub fn distance_from_dot(dot: f64) -> f64 {
    2.0 * EARTH_RADIUS_KM * (((1.0 - dot.clamp(-1.0, 1.0)) / 2.0).sqrt()).asin()
}

/// How a client's place was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocationKind {
    /// City-level coordinates from the database.
    Coordinates,
    /// Country only: the built-in centroid of the country.
    CountryCentroid,
}

/// The result of one GeoIP lookup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientGeo {
    /// None: the database cannot place this address.
    pub point: Option<GeoPoint>,
    pub kind: Option<LocationKind>,
    /// Prefix length of the database network that holds the address, in the address's own
    /// family (so 25, not 121, for an IPv4 address in an IPv6 tree). This becomes the ECS scope.
    pub prefix_len: u8,
}

#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(borrow, default)]
    country: Option<RawCountry<'a>>,
    #[serde(borrow, default)]
    registered_country: Option<RawCountry<'a>>,
    #[serde(default)]
    location: Option<RawLocation>,
}

#[derive(Deserialize)]
struct RawCountry<'a> {
    #[serde(default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct RawLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// A loaded GeoIP database (GeoIP2/GeoLite2/DB-IP City or Country).
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
    path: PathBuf,
    /// Distinguishes this database's entries in the per-thread unit-vector cache.
    id: u64,
}

/// Ids of opened databases; 0 marks an empty cache slot.
static NEXT_DB: AtomicU64 = AtomicU64::new(1);

/// Slots of the per-thread cache (48 bytes each): a record per city, and real traffic keeps a
/// few thousand cities hot.
const UNIT_CACHE: usize = 8192;

/// A record's unit vector, keyed by the database and the record's data offset: every network
/// of one city points at the same record, so the offset names the location.
#[derive(Clone, Copy)]
struct CachedUnit {
    db: u64,
    offset: usize,
    unit: [f64; 3],
    located: bool,
    /// The record did not decode: each hit counts as a lookup error.
    failed: bool,
}

thread_local! {
    /// Per thread, so the query path takes no lock; direct-mapped, so it never allocates
    /// after the first lookup and a collision simply replaces the slot.
    static UNITS: RefCell<Vec<CachedUnit>> = const { RefCell::new(Vec::new()) };
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .field("type", &self.database_type())
            .finish()
    }
}

impl GeoDb {
    /// Reads the whole file into memory (a regular file of at most 1 GiB) and verifies it: the
    /// metadata, a walk of the whole search tree, the data-section separator, every record
    /// the tree points at (maxminddb's `verify`: linear in the file's size), then decodes up to
    /// [`RECORDS_CHECKED`] distinct records as lookups do. A file that fails is refused whole,
    /// rather than answering wrongly for the addresses its damage touches.
    pub fn open(path: &Path) -> Result<GeoDb, GeoError> {
        let p = || path.to_path_buf();
        let buf = crate::source::read::read_bytes(path, crate::source::read::MAX_GEOIP_BYTES)
            .map_err(|source| GeoError::Read { path: p(), source })?;
        let reader = maxminddb::Reader::from_source(buf)
            .map_err(|source| GeoError::Open { path: p(), source })?;
        reader
            .verify()
            .map_err(|source| GeoError::Corrupt { path: p(), source })?;
        let mut seen = std::collections::HashSet::new();
        let networks = reader
            .networks(Default::default())
            .map_err(|source| GeoError::Corrupt { path: p(), source })?;
        for item in networks {
            let res = item.map_err(|source| GeoError::Corrupt { path: p(), source })?;
            let Some(offset) = res.offset() else { continue };
            if !seen.insert(offset) {
                continue;
            }
            if let Err(source) = res.decode::<RawRecord<'_>>() {
                let network = res
                    .network()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| format!("data offset {offset}"));
                return Err(GeoError::Record {
                    path: p(),
                    network,
                    source,
                });
            }
            if seen.len() >= RECORDS_CHECKED {
                break;
            }
        }
        Ok(GeoDb {
            reader,
            path: path.to_path_buf(),
            id: NEXT_DB.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// Says which database now serves and how old it is (a log line, two gauges): a stale
    /// database steers clients quietly wrong, so its age must be visible and alertable.
    pub fn announce(&self) {
        let built = self.build_epoch();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let built_at = jiff::Timestamp::from_second(built as i64)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| built.to_string());
        let md = self.reader.metadata();
        tracing::info!(
            path = %self.path.display(),
            database_type = %md.database_type,
            built = %built_at,
            age_days = now.saturating_sub(built) / 86_400,
            nodes = md.node_count,
            "GeoIP database loaded"
        );
        let m = crate::metrics::get();
        m.geoip_build_timestamp.set(built as i64);
        m.geoip_database.reset();
        m.geoip_database
            .with_label_values(&[md.database_type.as_str()])
            .set(1);
    }

    /// The same for running without a database: every client is unlocated.
    pub fn announce_none() {
        tracing::warn!(
            "no GeoIP database (--geoip or spec.geoip): clients cannot be located, geo answers \
             fall back to the default cluster or all-clusters order"
        );
        let m = crate::metrics::get();
        m.geoip_build_timestamp.set(0);
        m.geoip_database.reset();
    }

    /// Locates an address. A lookup that fails on a corrupt node or record places nothing (the
    /// query is still answered, as for an unknown client) and is logged and counted in
    /// `meridian_geoip_lookup_errors_total`.
    pub fn lookup(&self, ip: IpAddr) -> ClientGeo {
        let host_bits = host_bits(ip);
        let res = match self.reader.lookup(ip) {
            Ok(res) => res,
            Err(e) => {
                self.lookup_failed(&e);
                return ClientGeo {
                    point: None,
                    kind: None,
                    prefix_len: host_bits,
                };
            }
        };
        let prefix_len = prefix_len(&res, host_bits);
        let (point, kind) = locate(&res).unwrap_or_else(|e| {
            self.lookup_failed(&e);
            (None, None)
        });
        ClientGeo {
            point,
            kind,
            prefix_len,
        }
    }

    /// What the query path needs of `lookup`: the client's unit vector and the network's
    /// prefix length. The tree walk is per query; decoding the record and the trigonometry are
    /// done once per record and thread (a City record's serde decode is most of a geo answer's
    /// cost otherwise).
    pub fn lookup_unit(&self, ip: IpAddr) -> (Option<[f64; 3]>, u8) {
        let host_bits = host_bits(ip);
        let res = match self.reader.lookup(ip) {
            Ok(res) => res,
            Err(e) => {
                self.lookup_failed(&e);
                return (None, host_bits);
            }
        };
        let prefix_len = prefix_len(&res, host_bits);
        let Some(offset) = res.offset() else {
            return (None, prefix_len);
        };
        let slot = (offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 51;
        let unit = UNITS.with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return self.locate_unit(&res).0;
            };
            if cache.is_empty() {
                cache.resize(
                    UNIT_CACHE,
                    CachedUnit {
                        db: 0,
                        offset: 0,
                        unit: [0.0; 3],
                        located: false,
                        failed: false,
                    },
                );
            }
            let e = &mut cache[slot as usize % UNIT_CACHE];
            if e.db != self.id || e.offset != offset {
                let (unit, failed) = self.locate_unit(&res);
                *e = CachedUnit {
                    db: self.id,
                    offset,
                    unit: unit.unwrap_or([0.0; 3]),
                    located: unit.is_some(),
                    failed,
                };
            } else if e.failed {
                // Counted per query, as the uncached path does.
                self.count_failure();
            }
            e.located.then_some(e.unit)
        });
        (unit, prefix_len)
    }

    /// A record's unit vector; true when its decode failed (logged and counted).
    fn locate_unit<S: AsRef<[u8]>>(
        &self,
        res: &maxminddb::LookupResult<'_, S>,
    ) -> (Option<[f64; 3]>, bool) {
        match locate(res) {
            Ok((p, _)) => (p.map(|p| p.unit()), false),
            Err(e) => {
                self.lookup_failed(&e);
                (None, true)
            }
        }
    }

    fn count_failure(&self) {
        crate::metrics::get().geoip_lookup_errors.inc();
    }

    /// Counts a failed lookup and logs it, at most once per 10 s (with how many were not
    /// logged): a corrupt region of the tree can fail every query.
    fn lookup_failed(&self, e: &maxminddb::MaxMindDbError) {
        static LAST_LOG: AtomicU64 = AtomicU64::new(0);
        static UNLOGGED: AtomicU64 = AtomicU64::new(0);
        self.count_failure();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = LAST_LOG.load(Ordering::Relaxed);
        if now >= last.saturating_add(10)
            && LAST_LOG
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                path = %self.path.display(),
                error = %e,
                unlogged = UNLOGGED.swap(0, Ordering::Relaxed),
                "GeoIP lookup failed; the client is answered as unlocated"
            );
        } else {
            UNLOGGED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A human description of an address's record (city, subdivision, country), for `explain`.
    pub fn describe(&self, ip: IpAddr) -> Option<String> {
        let res = self.reader.lookup(ip).ok()?;
        let city: maxminddb::geoip2::City<'_> = res.decode().ok().flatten()?;
        let mut parts = Vec::new();
        if let Some(n) = city.city.names.english {
            parts.push(n.to_string());
        }
        if let Some(s) = city.subdivisions.first().and_then(|s| s.iso_code) {
            parts.push(s.to_string());
        }
        if let Some(c) = city.country.iso_code {
            parts.push(c.to_string());
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

fn host_bits(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// Prefix length of the database network holding the address, in the address's own family.
fn prefix_len<S: AsRef<[u8]>>(res: &maxminddb::LookupResult<'_, S>, host_bits: u8) -> u8 {
    res.network()
        .map(|n| n.prefix())
        .unwrap_or(host_bits)
        .min(host_bits)
}

type Located = (Option<GeoPoint>, Option<LocationKind>);

/// A record's place: its coordinates, else its country's centroid. Err: the record does not
/// decode.
fn locate<S: AsRef<[u8]>>(
    res: &maxminddb::LookupResult<'_, S>,
) -> Result<Located, maxminddb::MaxMindDbError> {
    let rec: Option<RawRecord<'_>> = res.decode()?;
    Ok(match rec {
        None => (None, None),
        Some(r) => {
            if let Some(p) = r
                .location
                .and_then(|l| GeoPoint::new(l.latitude?, l.longitude?))
            {
                (Some(p), Some(LocationKind::Coordinates))
            } else {
                let iso = r
                    .country
                    .and_then(|c| c.iso_code)
                    .or(r.registered_country.and_then(|c| c.iso_code));
                match iso.and_then(tables::country_centroid) {
                    Some((lat, lon)) => {
                        (GeoPoint::new(lat, lon), Some(LocationKind::CountryCentroid))
                    }
                    None => (None, None),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_units_match_decoded_lookups() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones/demo-geoip.mmdb");
        let db = GeoDb::open(&path).expect("demo mmdb");
        let other = GeoDb::open(&path).expect("demo mmdb");
        let mut located = 0;
        // Twice over: the first pass fills the cache, the second reads it; a second database
        // must not be served the first one's slots.
        for round in 0..2 {
            for a in 0..=255u8 {
                for ip in [
                    IpAddr::from([127, 0, a, 1]),
                    IpAddr::from([198, 51, 100, a]),
                ] {
                    for d in [&db, &other] {
                        let g = d.lookup(ip);
                        let want = (g.point.map(|p| p.unit()), g.prefix_len);
                        assert_eq!(d.lookup_unit(ip), want, "{ip} round {round}");
                        located += usize::from(want.0.is_some());
                    }
                }
            }
        }
        assert!(
            located > 0,
            "the demo database places some of these addresses"
        );
    }

    /// End of the search tree and start of the metadata marker.
    fn layout(buf: &[u8]) -> (usize, usize) {
        let r = maxminddb::Reader::from_source(buf.to_vec()).expect("fixture");
        let m = r.metadata();
        let tree = m.node_count as usize * m.record_size as usize / 4;
        let marker = b"\xab\xcd\xefMaxMind.com";
        let meta = buf
            .windows(marker.len())
            .rposition(|w| w == marker)
            .expect("metadata marker");
        (tree, meta)
    }

    /// Damaged copies of a fixture: (what, bytes).
    pub(crate) fn corruptions(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        let (tree, meta) = layout(good);
        let data = tree + 16;
        let mut out = Vec::new();
        // The data section cut in half: records the tree points at are gone.
        let mut cut = good[..data + (meta - data) / 2].to_vec();
        cut.extend_from_slice(&good[meta..]);
        out.push(("truncated data section", cut));
        // Bytes of the search tree flipped: pointers lead nowhere.
        let mut flipped = good.to_vec();
        for b in &mut flipped[tree / 2..tree / 2 + 24] {
            *b ^= 0xFF;
        }
        out.push(("flipped search tree", flipped));
        // The data section overwritten: records do not decode.
        let mut zeroed = good.to_vec();
        zeroed[data..meta].fill(0xFF);
        out.push(("garbage data section", zeroed));
        // The data-section separator damaged.
        let mut sep = good.to_vec();
        sep[tree + 3] = 7;
        out.push(("damaged separator", sep));
        // Metadata: a required field renamed, a wrong value.
        let mut renamed = good.to_vec();
        let at = meta
            + renamed[meta..]
                .windows(10)
                .position(|w| w == b"node_count")
                .expect("node_count key");
        renamed[at + 5] = b'X';
        out.push(("metadata without node_count", renamed));
        let mut version = good.to_vec();
        let key = b"binary_format_major_version";
        let at = meta
            + version[meta..]
                .windows(key.len())
                .position(|w| w == key)
                .expect("version key");
        // The value follows the key: a uint16 (control byte 0xa1) of 2.
        assert_eq!(version[at + key.len()..at + key.len() + 2], [0xa1, 2]);
        version[at + key.len() + 1] = 3;
        out.push(("metadata format version 3", version));
        out.push(("not a database", b"hello".to_vec()));
        out
    }

    #[test]
    fn corrupt_databases_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for fixture in ["tests/data/country.mmdb", "zones/demo-geoip.mmdb"] {
            let good = std::fs::read(root.join(fixture)).expect("fixture");
            for (what, bytes) in corruptions(&good) {
                let path = dir.path().join("bad.mmdb");
                std::fs::write(&path, bytes).expect("write");
                let e = GeoDb::open(&path)
                    .map(|_| ())
                    .expect_err(&format!("{fixture}: {what} accepted"))
                    .to_string();
                assert!(
                    e.starts_with(&format!("{}: ", path.display())) && e.contains("GeoIP database"),
                    "{fixture}: {what}: {e}"
                );
            }
        }
        let e = GeoDb::open(Path::new("/dev/zero"))
            .expect_err("device")
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn lookup_errors_are_counted_not_hidden() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let good = std::fs::read(root.join("zones/demo-geoip.mmdb")).expect("fixture");
        let (_, garbage) = corruptions(&good)
            .into_iter()
            .find(|(w, _)| *w == "garbage data section")
            .expect("corruption");
        // As a database that slipped past the checks would be served.
        let db = GeoDb {
            reader: maxminddb::Reader::from_source(garbage).expect("structure"),
            path: PathBuf::from("bad.mmdb"),
            id: NEXT_DB.fetch_add(1, Ordering::Relaxed),
        };
        let errors = || crate::metrics::get().geoip_lookup_errors.get();
        let ip = IpAddr::from([192, 0, 2, 1]);
        let before = errors();
        assert_eq!(db.lookup(ip).point, None);
        assert!(errors() > before, "lookup counted");
        for _ in 0..2 {
            let before = errors();
            assert_eq!(db.lookup_unit(ip).0, None);
            assert!(errors() > before, "lookup_unit counted, cached or not");
        }
    }

    #[test]
    fn distances() {
        let la = GeoPoint::new(34.05, -118.24).expect("valid");
        let ny = GeoPoint::new(40.71, -74.01).expect("valid");
        let d = la.distance_km(&ny);
        assert!((3900.0..4000.0).contains(&d), "{d}");
        let dot: f64 = la.unit().iter().zip(ny.unit()).map(|(a, b)| a * b).sum();
        assert!((distance_from_dot(dot) - d).abs() < 1.0);
        assert_eq!(la.distance_km(&la), 0.0);
    }

    #[test]
    fn parse_locations() {
        assert_eq!(
            GeoPoint::parse(" 34.05, -118.24 "),
            Ok(GeoPoint {
                lat: 34.05,
                lon: -118.24
            })
        );
        assert!(GeoPoint::parse("91,0").is_err());
        assert!(GeoPoint::parse("34.05").is_err());
        assert!(GeoPoint::parse("a,b").is_err());
    }
}
