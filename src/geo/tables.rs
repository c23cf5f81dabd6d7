//! Static coordinate tables: country centroids and cloud-region locations.
//!
//! Both tables are sorted by key so lookups are a binary search with a
//! case-insensitive comparator: no allocation, no hashing, no lazy
//! initialisation. The unit tests assert the ordering invariant.
//!
//! Coordinates are `(latitude, longitude)` in decimal degrees (north and east
//! positive). They are approximate — good to roughly a degree for countries,
//! and to the metro area the provider publishes for cloud regions — which is
//! all that nearest-cluster selection needs.

use std::cmp::Ordering;

/// Returns the approximate geographic centre `(lat, lon)` of a country, by its
/// ISO 3166-1 alpha-2 code (case-insensitive, e.g. `"DE"` or `"de"`).
///
/// Covers all 249 officially assigned codes plus `XK` (Kosovo), the
/// user-assigned code MaxMind and others use. For countries made of scattered
/// territories the point is a representative one (e.g. the main island).
/// Returns `None` for anything else.
#[must_use]
pub fn country_centroid(iso_code: &str) -> Option<(f64, f64)> {
    if iso_code.len() != 2 {
        return None;
    }
    lookup(COUNTRY_CENTROIDS, iso_code, |b| b.to_ascii_uppercase())
}

/// Returns the approximate location `(lat, lon)` of a well-known public cloud
/// region (case-insensitive).
///
/// Known names are AWS regions (`us-east-1`, `eu-central-1`, ...), Google
/// Cloud regions (`us-central1`, `europe-west4`, ...) and Azure regions
/// (`eastus`, `westeurope`, ...). The naming schemes do not collide.
///
/// If `name` is not a known region, a trailing zone suffix is stripped and
/// the result looked up once more, so a zone name (as found in Kubernetes'
/// `topology.kubernetes.io/zone` label) maps to its region:
///
/// - GCP style, `-` plus one letter: `us-central1-a` → `us-central1`;
/// - AWS style, one letter right after the region's final digit:
///   `us-east-1a` → `us-east-1`.
///
/// Azure zones are bare numbers (`1`, `2`, `3`) that never appear in the
/// region name, so nothing is stripped for them. Unknown names give `None`.
#[must_use]
pub fn cloud_region(name: &str) -> Option<(f64, f64)> {
    let lower = |b: u8| b.to_ascii_lowercase();
    if let Some(found) = lookup(CLOUD_REGIONS, name, lower) {
        return Some(found);
    }
    let region = strip_zone_suffix(name)?;
    lookup(CLOUD_REGIONS, region, lower)
}

/// Strips a GCP (`-a`) or AWS (`1a`) availability-zone suffix, if present.
fn strip_zone_suffix(name: &str) -> Option<&str> {
    let bytes = name.as_bytes();
    let n = bytes.len();
    if n < 3 || !bytes[n - 1].is_ascii_alphabetic() {
        return None;
    }
    // The last byte is ASCII, so `n - 1` and `n - 2` are char boundaries.
    if bytes[n - 2] == b'-' || bytes[n - 2].is_ascii_digit() {
        let cut = if bytes[n - 2] == b'-' { n - 2 } else { n - 1 };
        return Some(&name[..cut]);
    }
    None
}

/// Binary search of a table sorted by key, comparing the key against
/// `query` mapped byte-wise through `fold` (the table's keys are stored
/// already folded).
fn lookup(table: &[(&str, f64, f64)], query: &str, fold: impl Fn(u8) -> u8) -> Option<(f64, f64)> {
    table
        .binary_search_by(|(key, _, _)| cmp_folded(key.as_bytes(), query.as_bytes(), &fold))
        .ok()
        .map(|i| (table[i].1, table[i].2))
}

/// Lexicographic comparison of `key` with `query` after folding `query`.
fn cmp_folded(key: &[u8], query: &[u8], fold: &impl Fn(u8) -> u8) -> Ordering {
    for (&k, &q) in key.iter().zip(query) {
        match k.cmp(&fold(q)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    key.len().cmp(&query.len())
}

/// ISO 3166-1 alpha-2 code (upper case, sorted) → approximate centroid.
static COUNTRY_CENTROIDS: &[(&str, f64, f64)] = &[
    ("AD", 42.546245, 1.601554),     // Andorra
    ("AE", 23.424076, 53.847818),    // United Arab Emirates
    ("AF", 33.939110, 67.709953),    // Afghanistan
    ("AG", 17.060816, -61.796428),   // Antigua and Barbuda
    ("AI", 18.220554, -63.068615),   // Anguilla
    ("AL", 41.153332, 20.168331),    // Albania
    ("AM", 40.069099, 45.038189),    // Armenia
    ("AO", -11.202692, 17.873887),   // Angola
    ("AQ", -75.250973, -0.071389),   // Antarctica
    ("AR", -38.416097, -63.616672),  // Argentina
    ("AS", -14.270972, -170.132217), // American Samoa
    ("AT", 47.516231, 14.550072),    // Austria
    ("AU", -25.274398, 133.775136),  // Australia
    ("AW", 12.521110, -69.968338),   // Aruba
    ("AX", 60.178500, 19.915600),    // Åland Islands
    ("AZ", 40.143105, 47.576927),    // Azerbaijan
    ("BA", 43.915886, 17.679076),    // Bosnia and Herzegovina
    ("BB", 13.193887, -59.543198),   // Barbados
    ("BD", 23.684994, 90.356331),    // Bangladesh
    ("BE", 50.503887, 4.469936),     // Belgium
    ("BF", 12.238333, -1.561593),    // Burkina Faso
    ("BG", 42.733883, 25.485830),    // Bulgaria
    ("BH", 25.930414, 50.637772),    // Bahrain
    ("BI", -3.373056, 29.918886),    // Burundi
    ("BJ", 9.307690, 2.315834),      // Benin
    ("BL", 17.900000, -62.833333),   // Saint Barthélemy
    ("BM", 32.321384, -64.757370),   // Bermuda
    ("BN", 4.535277, 114.727669),    // Brunei
    ("BO", -16.290154, -63.588653),  // Bolivia
    ("BQ", 12.178361, -68.238534),   // Bonaire, Sint Eustatius and Saba
    ("BR", -14.235004, -51.925280),  // Brazil
    ("BS", 25.034280, -77.396280),   // Bahamas
    ("BT", 27.514162, 90.433601),    // Bhutan
    ("BV", -54.423199, 3.413194),    // Bouvet Island
    ("BW", -22.328474, 24.684866),   // Botswana
    ("BY", 53.709807, 27.953389),    // Belarus
    ("BZ", 17.189877, -88.497650),   // Belize
    ("CA", 56.130366, -106.346771),  // Canada
    ("CC", -12.164165, 96.870956),   // Cocos (Keeling) Islands
    ("CD", -4.038333, 21.758664),    // Congo (Democratic Republic)
    ("CF", 6.611111, 20.939444),     // Central African Republic
    ("CG", -0.228021, 15.827659),    // Congo
    ("CH", 46.818188, 8.227512),     // Switzerland
    ("CI", 7.539989, -5.547080),     // Côte d'Ivoire
    ("CK", -21.236736, -159.777671), // Cook Islands
    ("CL", -35.675147, -71.542969),  // Chile
    ("CM", 7.369722, 12.354722),     // Cameroon
    ("CN", 35.861660, 104.195397),   // China
    ("CO", 4.570868, -74.297333),    // Colombia
    ("CR", 9.748917, -83.753428),    // Costa Rica
    ("CU", 21.521757, -77.781167),   // Cuba
    ("CV", 16.002082, -24.013197),   // Cabo Verde
    ("CW", 12.169570, -68.990020),   // Curaçao
    ("CX", -10.447525, 105.690449),  // Christmas Island
    ("CY", 35.126413, 33.429859),    // Cyprus
    ("CZ", 49.817492, 15.472962),    // Czechia
    ("DE", 51.165691, 10.451526),    // Germany
    ("DJ", 11.825138, 42.590275),    // Djibouti
    ("DK", 56.263920, 9.501785),     // Denmark
    ("DM", 15.414999, -61.370976),   // Dominica
    ("DO", 18.735693, -70.162651),   // Dominican Republic
    ("DZ", 28.033886, 1.659626),     // Algeria
    ("EC", -1.831239, -78.183406),   // Ecuador
    ("EE", 58.595272, 25.013607),    // Estonia
    ("EG", 26.820553, 30.802498),    // Egypt
    ("EH", 24.215527, -12.885834),   // Western Sahara
    ("ER", 15.179384, 39.782334),    // Eritrea
    ("ES", 40.463667, -3.749220),    // Spain
    ("ET", 9.145000, 40.489673),     // Ethiopia
    ("FI", 61.924110, 25.748151),    // Finland
    ("FJ", -16.578193, 179.414413),  // Fiji
    ("FK", -51.796253, -59.523613),  // Falkland Islands
    ("FM", 7.425554, 150.550812),    // Micronesia
    ("FO", 61.892635, -6.911806),    // Faroe Islands
    ("FR", 46.227638, 2.213749),     // France
    ("GA", -0.803689, 11.609444),    // Gabon
    ("GB", 55.378051, -3.435973),    // United Kingdom
    ("GD", 12.262776, -61.604171),   // Grenada
    ("GE", 42.315407, 43.356892),    // Georgia
    ("GF", 3.933889, -53.125782),    // French Guiana
    ("GG", 49.465691, -2.585278),    // Guernsey
    ("GH", 7.946527, -1.023194),     // Ghana
    ("GI", 36.137741, -5.345374),    // Gibraltar
    ("GL", 71.706936, -42.604303),   // Greenland
    ("GM", 13.443182, -15.310139),   // Gambia
    ("GN", 9.945587, -9.696645),     // Guinea
    ("GP", 16.995971, -62.067641),   // Guadeloupe
    ("GQ", 1.650801, 10.267895),     // Equatorial Guinea
    ("GR", 39.074208, 21.824312),    // Greece
    ("GS", -54.429579, -36.587909),  // South Georgia and the South Sandwich Islands
    ("GT", 15.783471, -90.230759),   // Guatemala
    ("GU", 13.444304, 144.793731),   // Guam
    ("GW", 11.803749, -15.180413),   // Guinea-Bissau
    ("GY", 4.860416, -58.930180),    // Guyana
    ("HK", 22.396428, 114.109497),   // Hong Kong
    ("HM", -53.081810, 73.504158),   // Heard Island and McDonald Islands
    ("HN", 15.199999, -86.241905),   // Honduras
    ("HR", 45.100000, 15.200000),    // Croatia
    ("HT", 18.971187, -72.285215),   // Haiti
    ("HU", 47.162494, 19.503304),    // Hungary
    ("ID", -0.789275, 113.921327),   // Indonesia
    ("IE", 53.412910, -8.243890),    // Ireland
    ("IL", 31.046051, 34.851612),    // Israel
    ("IM", 54.236107, -4.548056),    // Isle of Man
    ("IN", 20.593684, 78.962880),    // India
    ("IO", -6.343194, 71.876519),    // British Indian Ocean Territory
    ("IQ", 33.223191, 43.679291),    // Iraq
    ("IR", 32.427908, 53.688046),    // Iran
    ("IS", 64.963051, -19.020835),   // Iceland
    ("IT", 41.871940, 12.567380),    // Italy
    ("JE", 49.214439, -2.131250),    // Jersey
    ("JM", 18.109581, -77.297508),   // Jamaica
    ("JO", 30.585164, 36.238414),    // Jordan
    ("JP", 36.204824, 138.252924),   // Japan
    ("KE", -0.023559, 37.906193),    // Kenya
    ("KG", 41.204380, 74.766098),    // Kyrgyzstan
    ("KH", 12.565679, 104.990963),   // Cambodia
    ("KI", 1.451817, 172.971680),    // Kiribati (Tarawa, most of the population)
    ("KM", -11.875001, 43.872219),   // Comoros
    ("KN", 17.357822, -62.782998),   // Saint Kitts and Nevis
    ("KP", 40.339852, 127.510093),   // North Korea
    ("KR", 35.907757, 127.766922),   // South Korea
    ("KW", 29.311660, 47.481766),    // Kuwait
    ("KY", 19.513469, -80.566956),   // Cayman Islands
    ("KZ", 48.019573, 66.923684),    // Kazakhstan
    ("LA", 19.856270, 102.495496),   // Laos
    ("LB", 33.854721, 35.862285),    // Lebanon
    ("LC", 13.909444, -60.978893),   // Saint Lucia
    ("LI", 47.166000, 9.555373),     // Liechtenstein
    ("LK", 7.873054, 80.771797),     // Sri Lanka
    ("LR", 6.428055, -9.429499),     // Liberia
    ("LS", -29.609988, 28.233608),   // Lesotho
    ("LT", 55.169438, 23.881275),    // Lithuania
    ("LU", 49.815273, 6.129583),     // Luxembourg
    ("LV", 56.879635, 24.603189),    // Latvia
    ("LY", 26.335100, 17.228331),    // Libya
    ("MA", 31.791702, -7.092620),    // Morocco
    ("MC", 43.750298, 7.412841),     // Monaco
    ("MD", 47.411631, 28.369885),    // Moldova
    ("ME", 42.708678, 19.374390),    // Montenegro
    ("MF", 18.070800, -63.050100),   // Saint Martin (French part)
    ("MG", -18.766947, 46.869107),   // Madagascar
    ("MH", 7.131474, 171.184478),    // Marshall Islands
    ("MK", 41.608635, 21.745275),    // North Macedonia
    ("ML", 17.570692, -3.996166),    // Mali
    ("MM", 21.913965, 95.956223),    // Myanmar
    ("MN", 46.862496, 103.846656),   // Mongolia
    ("MO", 22.198745, 113.543873),   // Macao
    ("MP", 17.330830, 145.384690),   // Northern Mariana Islands
    ("MQ", 14.641528, -61.024174),   // Martinique
    ("MR", 21.007890, -10.940835),   // Mauritania
    ("MS", 16.742498, -62.187366),   // Montserrat
    ("MT", 35.937496, 14.375416),    // Malta
    ("MU", -20.348404, 57.552152),   // Mauritius
    ("MV", 3.202778, 73.220680),     // Maldives
    ("MW", -13.254308, 34.301525),   // Malawi
    ("MX", 23.634501, -102.552784),  // Mexico
    ("MY", 4.210484, 101.975766),    // Malaysia
    ("MZ", -18.665695, 35.529562),   // Mozambique
    ("NA", -22.957640, 18.490410),   // Namibia
    ("NC", -20.904305, 165.618042),  // New Caledonia
    ("NE", 17.607789, 8.081666),     // Niger
    ("NF", -29.040835, 167.954712),  // Norfolk Island
    ("NG", 9.081999, 8.675277),      // Nigeria
    ("NI", 12.865416, -85.207229),   // Nicaragua
    ("NL", 52.132633, 5.291266),     // Netherlands
    ("NO", 60.472024, 8.468946),     // Norway
    ("NP", 28.394857, 84.124008),    // Nepal
    ("NR", -0.522778, 166.931503),   // Nauru
    ("NU", -19.054445, -169.867233), // Niue
    ("NZ", -40.900557, 174.885971),  // New Zealand
    ("OM", 21.512583, 55.923255),    // Oman
    ("PA", 8.537981, -80.782127),    // Panama
    ("PE", -9.189967, -75.015152),   // Peru
    ("PF", -17.679742, -149.406843), // French Polynesia
    ("PG", -6.314993, 143.955550),   // Papua New Guinea
    ("PH", 12.879721, 121.774017),   // Philippines
    ("PK", 30.375321, 69.345116),    // Pakistan
    ("PL", 51.919438, 19.145136),    // Poland
    ("PM", 46.941936, -56.271110),   // Saint Pierre and Miquelon
    ("PN", -24.703615, -127.439308), // Pitcairn
    ("PR", 18.220833, -66.590149),   // Puerto Rico
    ("PS", 31.952162, 35.233154),    // Palestine
    ("PT", 39.399872, -8.224454),    // Portugal
    ("PW", 7.514980, 134.582520),    // Palau
    ("PY", -23.442503, -58.443832),  // Paraguay
    ("QA", 25.354826, 51.183884),    // Qatar
    ("RE", -21.115141, 55.536384),   // Réunion
    ("RO", 45.943161, 24.966760),    // Romania
    ("RS", 44.016521, 21.005859),    // Serbia
    ("RU", 61.524010, 105.318756),   // Russia
    ("RW", -1.940278, 29.873888),    // Rwanda
    ("SA", 23.885942, 45.079162),    // Saudi Arabia
    ("SB", -9.645710, 160.156194),   // Solomon Islands
    ("SC", -4.679574, 55.491977),    // Seychelles
    ("SD", 12.862807, 30.217636),    // Sudan
    ("SE", 60.128161, 18.643501),    // Sweden
    ("SG", 1.352083, 103.819836),    // Singapore
    ("SH", -15.965000, -5.708900),   // Saint Helena, Ascension and Tristan da Cunha
    ("SI", 46.151241, 14.995463),    // Slovenia
    ("SJ", 77.553604, 23.670272),    // Svalbard and Jan Mayen
    ("SK", 48.669026, 19.699024),    // Slovakia
    ("SL", 8.460555, -11.779889),    // Sierra Leone
    ("SM", 43.942360, 12.457777),    // San Marino
    ("SN", 14.497401, -14.452362),   // Senegal
    ("SO", 5.152149, 46.199616),     // Somalia
    ("SR", 3.919305, -56.027783),    // Suriname
    ("SS", 7.862685, 29.694923),     // South Sudan
    ("ST", 0.186360, 6.613081),      // São Tomé and Príncipe
    ("SV", 13.794185, -88.896530),   // El Salvador
    ("SX", 18.042480, -63.054830),   // Sint Maarten (Dutch part)
    ("SY", 34.802075, 38.996815),    // Syria
    ("SZ", -26.522503, 31.465866),   // Eswatini
    ("TC", 21.694025, -71.797928),   // Turks and Caicos Islands
    ("TD", 15.454166, 18.732207),    // Chad
    ("TF", -49.280366, 69.348557),   // French Southern Territories
    ("TG", 8.619543, 0.824782),      // Togo
    ("TH", 15.870032, 100.992541),   // Thailand
    ("TJ", 38.861034, 71.276093),    // Tajikistan
    ("TK", -8.967363, -171.855881),  // Tokelau
    ("TL", -8.874217, 125.727539),   // Timor-Leste
    ("TM", 38.969719, 59.556278),    // Turkmenistan
    ("TN", 33.886917, 9.537499),     // Tunisia
    ("TO", -21.178986, -175.198242), // Tonga
    ("TR", 38.963745, 35.243322),    // Türkiye
    ("TT", 10.691803, -61.222503),   // Trinidad and Tobago
    ("TV", -7.109535, 177.649330),   // Tuvalu
    ("TW", 23.697810, 120.960515),   // Taiwan
    ("TZ", -6.369028, 34.888822),    // Tanzania
    ("UA", 48.379433, 31.165580),    // Ukraine
    ("UG", 1.373333, 32.290275),     // Uganda
    ("UM", 19.282300, 166.647000),   // U.S. Minor Outlying Islands (Wake Island)
    ("US", 37.090240, -95.712891),   // United States
    ("UY", -32.522779, -55.765835),  // Uruguay
    ("UZ", 41.377491, 64.585262),    // Uzbekistan
    ("VA", 41.902916, 12.453389),    // Holy See
    ("VC", 12.984305, -61.287228),   // Saint Vincent and the Grenadines
    ("VE", 6.423750, -66.589730),    // Venezuela
    ("VG", 18.420695, -64.639968),   // British Virgin Islands
    ("VI", 18.335765, -64.896335),   // U.S. Virgin Islands
    ("VN", 14.058324, 108.277199),   // Vietnam
    ("VU", -15.376706, 166.959158),  // Vanuatu
    ("WF", -13.768752, -177.156097), // Wallis and Futuna
    ("WS", -13.759029, -172.104629), // Samoa
    ("XK", 42.602636, 20.902977),    // Kosovo (user-assigned code)
    ("YE", 15.552727, 48.516388),    // Yemen
    ("YT", -12.827500, 45.166244),   // Mayotte
    ("ZA", -30.559482, 22.937506),   // South Africa
    ("ZM", -13.133897, 27.849332),   // Zambia
    ("ZW", -19.015438, 29.154857),   // Zimbabwe
];

/// Cloud region name (lower case, sorted) → approximate location of the
/// region's data centres (or the metro area the provider names).
static CLOUD_REGIONS: &[(&str, f64, f64)] = &[
    ("af-south-1", -33.9249, 18.4241),              // AWS Cape Town
    ("africa-south1", -26.2041, 28.0473),           // GCP Johannesburg
    ("ap-east-1", 22.3193, 114.1694),               // AWS Hong Kong
    ("ap-northeast-1", 35.6762, 139.6503),          // AWS Tokyo
    ("ap-northeast-2", 37.5665, 126.9780),          // AWS Seoul
    ("ap-northeast-3", 34.6937, 135.5023),          // AWS Osaka
    ("ap-south-1", 19.0760, 72.8777),               // AWS Mumbai
    ("ap-south-2", 17.3850, 78.4867),               // AWS Hyderabad
    ("ap-southeast-1", 1.3521, 103.8198),           // AWS Singapore
    ("ap-southeast-2", -33.8688, 151.2093),         // AWS Sydney
    ("ap-southeast-3", -6.2088, 106.8456),          // AWS Jakarta
    ("ap-southeast-4", -37.8136, 144.9631),         // AWS Melbourne
    ("ap-southeast-5", 3.1390, 101.6869),           // AWS Malaysia (Kuala Lumpur)
    ("ap-southeast-7", 13.7563, 100.5018),          // AWS Thailand (Bangkok)
    ("asia-east1", 24.0518, 120.5161),              // GCP Changhua County, Taiwan
    ("asia-east2", 22.3193, 114.1694),              // GCP Hong Kong
    ("asia-northeast1", 35.6762, 139.6503),         // GCP Tokyo
    ("asia-northeast2", 34.6937, 135.5023),         // GCP Osaka
    ("asia-northeast3", 37.5665, 126.9780),         // GCP Seoul
    ("asia-south1", 19.0760, 72.8777),              // GCP Mumbai
    ("asia-south2", 28.6139, 77.2090),              // GCP Delhi
    ("asia-southeast1", 1.3404, 103.7090),          // GCP Jurong West, Singapore
    ("asia-southeast2", -6.2088, 106.8456),         // GCP Jakarta
    ("australia-southeast1", -33.8688, 151.2093),   // GCP Sydney
    ("australia-southeast2", -37.8136, 144.9631),   // GCP Melbourne
    ("australiacentral", -35.3075, 149.1244),       // Azure Canberra
    ("australiaeast", -33.8600, 151.2094),          // Azure New South Wales
    ("australiasoutheast", -37.8136, 144.9631),     // Azure Victoria
    ("brazilsouth", -23.5500, -46.6330),            // Azure São Paulo State
    ("ca-central-1", 45.5017, -73.5673),            // AWS Canada (Montréal)
    ("ca-west-1", 51.0447, -114.0719),              // AWS Calgary
    ("canadacentral", 43.6530, -79.3830),           // Azure Toronto
    ("canadaeast", 46.8170, -71.2170),              // Azure Quebec City
    ("centralindia", 18.5822, 73.9197),             // Azure Pune
    ("centralus", 41.5908, -93.6208),               // Azure Iowa
    ("eastasia", 22.2670, 114.1880),                // Azure Hong Kong
    ("eastus", 37.3719, -79.8164),                  // Azure Virginia
    ("eastus2", 36.6681, -78.3889),                 // Azure Virginia
    ("eu-central-1", 50.1109, 8.6821),              // AWS Frankfurt
    ("eu-central-2", 47.3769, 8.5417),              // AWS Zürich
    ("eu-north-1", 59.3293, 18.0686),               // AWS Stockholm
    ("eu-south-1", 45.4642, 9.1900),                // AWS Milan
    ("eu-south-2", 41.6488, -0.8891),               // AWS Spain (Aragón)
    ("eu-west-1", 53.3498, -6.2603),                // AWS Ireland (Dublin)
    ("eu-west-2", 51.5074, -0.1278),                // AWS London
    ("eu-west-3", 48.8566, 2.3522),                 // AWS Paris
    ("europe-central2", 52.2297, 21.0122),          // GCP Warsaw
    ("europe-north1", 60.5693, 27.1878),            // GCP Hamina, Finland
    ("europe-southwest1", 40.4168, -3.7038),        // GCP Madrid
    ("europe-west1", 50.4710, 3.8170),              // GCP St. Ghislain, Belgium
    ("europe-west10", 52.5200, 13.4050),            // GCP Berlin
    ("europe-west12", 45.0703, 7.6869),             // GCP Turin
    ("europe-west2", 51.5074, -0.1278),             // GCP London
    ("europe-west3", 50.1109, 8.6821),              // GCP Frankfurt
    ("europe-west4", 53.4386, 6.8355),              // GCP Eemshaven, Netherlands
    ("europe-west6", 47.3769, 8.5417),              // GCP Zürich
    ("europe-west8", 45.4642, 9.1900),              // GCP Milan
    ("europe-west9", 48.8566, 2.3522),              // GCP Paris
    ("francecentral", 46.3772, 2.3730),             // Azure Paris
    ("francesouth", 43.8345, 2.1972),               // Azure Marseille
    ("germanynorth", 53.0736, 8.8064),              // Azure Berlin
    ("germanywestcentral", 50.1109, 8.6821),        // Azure Frankfurt
    ("il-central-1", 32.0853, 34.7818),             // AWS Tel Aviv
    ("israelcentral", 31.9500, 34.8000),            // Azure Israel
    ("italynorth", 45.4689, 9.1811),                // Azure Milan
    ("japaneast", 35.6800, 139.7700),               // Azure Tokyo, Saitama
    ("japanwest", 34.6939, 135.5022),               // Azure Osaka
    ("koreacentral", 37.5665, 126.9780),            // Azure Seoul
    ("koreasouth", 35.1796, 129.0756),              // Azure Busan
    ("me-central-1", 25.2048, 55.2708),             // AWS UAE
    ("me-central1", 25.2854, 51.5310),              // GCP Doha
    ("me-central2", 26.4207, 50.0888),              // GCP Dammam
    ("me-south-1", 26.0667, 50.5577),               // AWS Bahrain
    ("me-west1", 32.0853, 34.7818),                 // GCP Tel Aviv
    ("mexicocentral", 20.5888, -100.3899),          // Azure Querétaro
    ("mx-central-1", 20.5888, -100.3899),           // AWS Mexico (Querétaro)
    ("newzealandnorth", -36.8485, 174.7633),        // Azure Auckland
    ("northamerica-northeast1", 45.5017, -73.5673), // GCP Montréal
    ("northamerica-northeast2", 43.6532, -79.3832), // GCP Toronto
    ("northamerica-south1", 20.5888, -100.3899),    // GCP Querétaro
    ("northcentralus", 41.8819, -87.6278),          // Azure Illinois
    ("northeurope", 53.3478, -6.2597),              // Azure Ireland
    ("norwayeast", 59.9139, 10.7522),               // Azure Oslo
    ("norwaywest", 58.9700, 5.7331),                // Azure Stavanger
    ("polandcentral", 52.2297, 21.0122),            // Azure Warsaw
    ("qatarcentral", 25.5515, 51.4393),             // Azure Doha
    ("sa-east-1", -23.5505, -46.6333),              // AWS São Paulo
    ("southafricanorth", -25.7313, 28.2184),        // Azure Johannesburg
    ("southafricawest", -34.0757, 18.8433),         // Azure Cape Town
    ("southamerica-east1", -23.5505, -46.6333),     // GCP Osasco (São Paulo)
    ("southamerica-west1", -33.4489, -70.6693),     // GCP Santiago
    ("southcentralus", 29.4167, -98.5000),          // Azure Texas
    ("southeastasia", 1.2830, 103.8330),            // Azure Singapore
    ("southindia", 12.9822, 80.1636),               // Azure Chennai
    ("spaincentral", 40.4168, -3.7038),             // Azure Madrid
    ("swedencentral", 60.6749, 17.1413),            // Azure Gävle
    ("switzerlandnorth", 47.4515, 8.5646),          // Azure Zürich
    ("switzerlandwest", 46.2044, 6.1432),           // Azure Geneva
    ("uaecentral", 24.4667, 54.3667),               // Azure Abu Dhabi
    ("uaenorth", 25.2667, 55.3167),                 // Azure Dubai
    ("uksouth", 50.9410, -0.7990),                  // Azure London
    ("ukwest", 53.4270, -3.0840),                   // Azure Cardiff
    ("us-central1", 41.2619, -95.8608),             // GCP Council Bluffs, Iowa
    ("us-east-1", 39.0438, -77.4874),               // AWS N. Virginia (Ashburn)
    ("us-east-2", 39.9612, -82.9988),               // AWS Ohio (Columbus)
    ("us-east1", 33.1960, -80.0131),                // GCP Moncks Corner, South Carolina
    ("us-east4", 39.0438, -77.4874),                // GCP Ashburn, N. Virginia
    ("us-east5", 39.9612, -82.9988),                // GCP Columbus, Ohio
    ("us-south1", 32.7767, -96.7970),               // GCP Dallas
    ("us-west-1", 37.3541, -121.9552),              // AWS N. California
    ("us-west-2", 45.8399, -119.7006),              // AWS Oregon (Boardman)
    ("us-west1", 45.5946, -121.1787),               // GCP The Dalles, Oregon
    ("us-west2", 34.0522, -118.2437),               // GCP Los Angeles
    ("us-west3", 40.7608, -111.8910),               // GCP Salt Lake City
    ("us-west4", 36.1699, -115.1398),               // GCP Las Vegas
    ("westcentralus", 40.8900, -110.2340),          // Azure Wyoming
    ("westeurope", 52.3667, 4.9000),                // Azure Netherlands
    ("westindia", 19.0880, 72.8680),                // Azure Mumbai
    ("westus", 37.7830, -122.4170),                 // Azure California
    ("westus2", 47.2330, -119.8520),                // Azure Washington
    ("westus3", 33.4484, -112.0740),                // Azure Phoenix
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every officially assigned ISO 3166-1 alpha-2 code (249).
    const ISO_3166_1: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ \
        BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
        CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ \
        DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR \
        GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY \
        HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP \
        KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY \
        MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ \
        NA NC NE NF NG NI NL NO NP NR NU NZ OM \
        PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW \
        SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ \
        TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ \
        UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

    fn assert_sorted_unique(table: &[(&str, f64, f64)]) {
        for pair in table.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "table not strictly sorted: {:?} then {:?}",
                pair[0].0,
                pair[1].0
            );
        }
    }

    fn assert_valid_coordinates(table: &[(&str, f64, f64)]) {
        for &(key, lat, lon) in table {
            assert!((-90.0..=90.0).contains(&lat), "{key}: latitude {lat}");
            assert!((-180.0..=180.0).contains(&lon), "{key}: longitude {lon}");
        }
    }

    fn close(got: Option<(f64, f64)>, lat: f64, lon: f64, tolerance: f64) -> bool {
        matches!(got, Some((a, b)) if (a - lat).abs() <= tolerance && (b - lon).abs() <= tolerance)
    }

    #[test]
    fn country_table_sorted_unique_and_valid() {
        assert_sorted_unique(COUNTRY_CENTROIDS);
        assert_valid_coordinates(COUNTRY_CENTROIDS);
        for &(code, _, _) in COUNTRY_CENTROIDS {
            assert!(
                code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()),
                "bad key {code:?}"
            );
        }
    }

    #[test]
    fn cloud_table_sorted_unique_and_valid() {
        assert_sorted_unique(CLOUD_REGIONS);
        assert_valid_coordinates(CLOUD_REGIONS);
        for &(name, _, _) in CLOUD_REGIONS {
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "bad key {name:?}"
            );
            // A region name must not itself look like a zone of another one.
            if let Some(stripped) = strip_zone_suffix(name) {
                assert!(
                    lookup(CLOUD_REGIONS, stripped, |b| b).is_none(),
                    "{name:?} would shadow zone stripping to {stripped:?}"
                );
            }
        }
    }

    #[test]
    fn every_iso_code_present() {
        let codes: Vec<&str> = ISO_3166_1.split_whitespace().collect();
        assert_eq!(codes.len(), 249);
        for code in codes {
            assert!(country_centroid(code).is_some(), "missing {code}");
        }
        // 249 official codes plus XK.
        assert_eq!(COUNTRY_CENTROIDS.len(), 250);
        assert!(country_centroid("XK").is_some());
    }

    #[test]
    fn country_spot_checks() {
        assert!(close(country_centroid("US"), 39.8, -98.6, 3.0));
        assert!(close(country_centroid("DE"), 51.2, 10.4, 1.0));
        assert!(close(country_centroid("JP"), 36.2, 138.3, 1.0));
        assert!(close(country_centroid("FR"), 46.2, 2.2, 1.0));
        assert!(close(country_centroid("AU"), -25.3, 133.8, 1.0));
        assert!(close(country_centroid("BR"), -14.2, -51.9, 1.0));
        assert!(close(country_centroid("SG"), 1.35, 103.8, 0.2));
        assert!(close(country_centroid("ZA"), -30.6, 22.9, 1.0));
    }

    #[test]
    fn country_case_insensitive() {
        assert_eq!(country_centroid("de"), country_centroid("DE"));
        assert_eq!(country_centroid("dE"), country_centroid("DE"));
        assert_eq!(country_centroid("gb"), country_centroid("GB"));
        assert!(country_centroid("zw").is_some());
    }

    #[test]
    fn country_unknown() {
        for code in ["", "U", "USA", "ZZ", "AA", "EU", "??", "é", "u\u{0}"] {
            assert_eq!(country_centroid(code), None, "{code:?}");
        }
    }

    #[test]
    fn cloud_spot_checks() {
        assert!(close(cloud_region("us-east-1"), 38.9, -77.4, 1.0));
        assert!(close(cloud_region("us-west-2"), 45.8, -119.7, 1.0));
        assert!(close(cloud_region("eu-central-1"), 50.1, 8.7, 0.5));
        assert!(close(cloud_region("ap-southeast-2"), -33.9, 151.2, 0.5));
        assert!(close(cloud_region("us-central1"), 41.3, -95.9, 0.5));
        assert!(close(cloud_region("europe-west4"), 53.4, 6.8, 0.5));
        assert!(close(cloud_region("asia-northeast1"), 35.7, 139.7, 0.5));
        assert!(close(cloud_region("westeurope"), 52.4, 4.9, 0.5));
        assert!(close(cloud_region("eastus"), 37.4, -79.8, 1.0));
        assert!(close(cloud_region("sa-east-1"), -23.6, -46.6, 0.5));
    }

    #[test]
    fn cloud_requested_regions_present() {
        let names = "us-east-1 us-east-2 us-west-1 us-west-2 ca-central-1 eu-west-1 eu-west-2 \
            eu-west-3 eu-central-1 eu-central-2 eu-north-1 eu-south-1 eu-south-2 ap-northeast-1 \
            ap-northeast-2 ap-northeast-3 ap-southeast-1 ap-southeast-2 ap-southeast-3 \
            ap-southeast-4 ap-south-1 ap-south-2 ap-east-1 sa-east-1 me-south-1 me-central-1 \
            af-south-1 il-central-1 \
            us-central1 us-east1 us-east4 us-east5 us-south1 us-west1 us-west2 us-west3 \
            us-west4 northamerica-northeast1 northamerica-northeast2 southamerica-east1 \
            southamerica-west1 europe-west1 europe-west2 europe-west3 europe-west4 europe-west6 \
            europe-west8 europe-west9 europe-north1 europe-central2 europe-southwest1 asia-east1 \
            asia-east2 asia-northeast1 asia-northeast2 asia-northeast3 asia-south1 asia-south2 \
            asia-southeast1 asia-southeast2 australia-southeast1 australia-southeast2 me-west1 \
            me-central1 africa-south1 \
            eastus eastus2 centralus northcentralus southcentralus westcentralus westus westus2 \
            westus3 canadacentral canadaeast brazilsouth northeurope westeurope uksouth ukwest \
            francecentral germanywestcentral norwayeast swedencentral switzerlandnorth \
            polandcentral italynorth eastasia southeastasia japaneast japanwest koreacentral \
            centralindia southindia westindia australiaeast australiasoutheast uaenorth \
            southafricanorth qatarcentral israelcentral";
        for name in names.split_whitespace() {
            assert!(cloud_region(name).is_some(), "missing {name}");
        }
    }

    #[test]
    fn cloud_case_insensitive() {
        assert_eq!(cloud_region("US-EAST-1"), cloud_region("us-east-1"));
        assert_eq!(cloud_region("WestEurope"), cloud_region("westeurope"));
        assert_eq!(cloud_region("Europe-West4"), cloud_region("europe-west4"));
        assert_eq!(cloud_region("US-EAST-1A"), cloud_region("us-east-1"));
        assert_eq!(cloud_region("US-CENTRAL1-B"), cloud_region("us-central1"));
    }

    #[test]
    fn cloud_zone_suffix_stripping() {
        // AWS availability zones.
        assert_eq!(cloud_region("us-east-1a"), cloud_region("us-east-1"));
        assert_eq!(cloud_region("eu-west-2c"), cloud_region("eu-west-2"));
        assert_eq!(
            cloud_region("ap-southeast-2b"),
            cloud_region("ap-southeast-2")
        );
        // GCP zones.
        assert_eq!(cloud_region("us-central1-a"), cloud_region("us-central1"));
        assert_eq!(cloud_region("europe-west4-c"), cloud_region("europe-west4"));
        assert_eq!(
            cloud_region("asia-northeast1-b"),
            cloud_region("asia-northeast1")
        );
        assert!(cloud_region("us-east-1a").is_some());
        assert!(cloud_region("us-central1-f").is_some());
        // Only one suffix is stripped, and only a zone-shaped one.
        assert_eq!(cloud_region("us-east-1ab"), None);
        assert_eq!(cloud_region("us-central1-a-b"), None);
        assert_eq!(cloud_region("us-central1-1"), None);
        assert_eq!(cloud_region("us-central1-ab"), None);
    }

    #[test]
    fn cloud_unknown() {
        for name in [
            "",
            "a",
            "-a",
            "us-east-9",
            "us-east-9a",
            "mars-north1",
            "mars-north1-a",
            "eastus-1",
            "eu",
            "ü-a",
            "westus-",
        ] {
            assert_eq!(cloud_region(name), None, "{name:?}");
        }
    }

    #[test]
    fn strip_zone_suffix_shapes() {
        assert_eq!(strip_zone_suffix("us-east-1a"), Some("us-east-1"));
        assert_eq!(strip_zone_suffix("us-central1-a"), Some("us-central1"));
        assert_eq!(strip_zone_suffix("eastus"), None);
        assert_eq!(strip_zone_suffix("eastus2"), None);
        assert_eq!(strip_zone_suffix("1a"), None);
        assert_eq!(strip_zone_suffix("é-a"), Some("é"));
    }
}
