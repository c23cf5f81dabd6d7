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
    #[error("{path}: cannot open GeoIP database: {source}")]
    Open {
        path: PathBuf,
        source: maxminddb::MaxMindDbError,
    },
}

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
    /// Reads the whole file into memory and checks that it is a MaxMind DB.
    pub fn open(path: &Path) -> Result<GeoDb, GeoError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|source| GeoError::Open {
            path: path.to_path_buf(),
            source,
        })?;
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

    /// Locates an address. A corrupt record counts as "not found" rather than failing the query.
    pub fn lookup(&self, ip: IpAddr) -> ClientGeo {
        let host_bits = host_bits(ip);
        let Ok(res) = self.reader.lookup(ip) else {
            return ClientGeo {
                point: None,
                kind: None,
                prefix_len: host_bits,
            };
        };
        let prefix_len = prefix_len(&res, host_bits);
        let (point, kind) = locate(&res);
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
        let Ok(res) = self.reader.lookup(ip) else {
            return (None, host_bits);
        };
        let prefix_len = prefix_len(&res, host_bits);
        let Some(offset) = res.offset() else {
            return (None, prefix_len);
        };
        let slot = (offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 51;
        let unit = UNITS.with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return locate(&res).0.map(|p| p.unit());
            };
            if cache.is_empty() {
                cache.resize(
                    UNIT_CACHE,
                    CachedUnit {
                        db: 0,
                        offset: 0,
                        unit: [0.0; 3],
                        located: false,
                    },
                );
            }
            let e = &mut cache[slot as usize % UNIT_CACHE];
            if e.db != self.id || e.offset != offset {
                let unit = locate(&res).0.map(|p| p.unit());
                *e = CachedUnit {
                    db: self.id,
                    offset,
                    unit: unit.unwrap_or([0.0; 3]),
                    located: unit.is_some(),
                };
            }
            e.located.then_some(e.unit)
        });
        (unit, prefix_len)
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

/// A record's place: its coordinates, else its country's centroid. A corrupt record places
/// nothing.
fn locate<S: AsRef<[u8]>>(
    res: &maxminddb::LookupResult<'_, S>,
) -> (Option<GeoPoint>, Option<LocationKind>) {
    let rec: Option<RawRecord<'_>> = res.decode().ok().flatten();
    match rec {
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
    }
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
