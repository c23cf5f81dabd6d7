// Command geoip writes the tiny MaxMind DB (mmdb) fixtures used by
// meridian's tests and demo zones:
//
//   - zones/demo-geoip.mmdb     (database_type "GeoIP2-City")
//   - tests/data/country.mmdb   (database_type "GeoLite2-Country")
//
// Every network in them is a documentation, benchmarking or loopback prefix,
// so the files are built with IncludeReservedNetworks. Output is
// deterministic (fixed build epoch), so regenerating an unchanged fixture
// gives identical bytes.
//
// Usage (from this directory):
//
//	go run .                 # repo root is ../../..
//	go run . -root /path/to/repo
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// buildEpoch is fixed so the generated files are reproducible
// (2024-01-01T00:00:00Z).
const buildEpoch = 1704067200

type country struct {
	iso, name, continentCode, continentName string
}

var (
	us = country{"US", "United States", "NA", "North America"}
	de = country{"DE", "Germany", "EU", "Europe"}
	jp = country{"JP", "Japan", "AS", "Asia"}
	fr = country{"FR", "France", "EU", "Europe"}
)

type city struct {
	name           string
	subdivISO      string
	subdivName     string
	lat, lon       float64
	accuracyRadius uint16
	timeZone       string
}

var (
	sanFrancisco = city{"San Francisco", "CA", "California", 37.7749, -122.4194, 10, "America/Los_Angeles"}
	sanDiego     = city{"San Diego", "CA", "California", 32.7157, -117.1611, 10, "America/Los_Angeles"}
	newYork      = city{"New York", "NY", "New York", 40.7128, -74.0060, 10, "America/New_York"}
	dallas       = city{"Dallas", "TX", "Texas", 32.7767, -96.7970, 10, "America/Chicago"}
	miami        = city{"Miami", "FL", "Florida", 25.7617, -80.1918, 10, "America/New_York"}
	sanJose      = city{"San Jose", "CA", "California", 37.3382, -121.8863, 10, "America/Los_Angeles"}
	boston       = city{"Boston", "MA", "Massachusetts", 42.3601, -71.0589, 10, "America/New_York"}
	austin       = city{"Austin", "TX", "Texas", 30.2672, -97.7431, 10, "America/Chicago"}
)

func names(en string) mmdbtype.Map {
	return mmdbtype.Map{"en": mmdbtype.String(en)}
}

// countryRecord is a GeoLite2-Country shaped record: continent and country
// only.
func countryRecord(c country) mmdbtype.Map {
	return mmdbtype.Map{
		"continent": mmdbtype.Map{
			"code":  mmdbtype.String(c.continentCode),
			"names": names(c.continentName),
		},
		"country": mmdbtype.Map{
			"iso_code": mmdbtype.String(c.iso),
			"names":    names(c.name),
		},
	}
}

// cityRecord is a GeoIP2-City shaped record for a US city.
func cityRecord(c city) mmdbtype.Map {
	rec := countryRecord(us)
	rec["city"] = mmdbtype.Map{"names": names(c.name)}
	rec["subdivisions"] = mmdbtype.Slice{
		mmdbtype.Map{
			"iso_code": mmdbtype.String(c.subdivISO),
			"names":    names(c.subdivName),
		},
	}
	rec["location"] = mmdbtype.Map{
		"latitude":        mmdbtype.Float64(c.lat),
		"longitude":       mmdbtype.Float64(c.lon),
		"accuracy_radius": mmdbtype.Uint16(c.accuracyRadius),
		"time_zone":       mmdbtype.String(c.timeZone),
	}
	return rec
}

type entry struct {
	cidr   string
	record mmdbtype.Map
}

func cityEntries() []entry {
	return []entry{
		{"192.0.2.0/25", cityRecord(sanFrancisco)},
		{"192.0.2.128/25", cityRecord(sanDiego)},
		{"198.51.100.0/24", cityRecord(newYork)},
		{"203.0.113.0/25", cityRecord(dallas)},
		{"203.0.113.128/25", cityRecord(miami)},
		// Country only, no location and no city: exercises the
		// country-centroid fallback.
		{"198.18.0.0/15", countryRecord(de)},
		// Loopback source addresses that test clients bind to.
		{"127.0.1.0/24", cityRecord(sanFrancisco)},
		{"127.0.2.0/24", cityRecord(newYork)},
		{"127.0.3.0/24", cityRecord(dallas)},
		{"2001:db8:1::/48", cityRecord(sanJose)},
		{"2001:db8:2::/48", cityRecord(boston)},
		{"2001:db8:3::/48", cityRecord(austin)},
	}
}

func countryEntries() []entry {
	return []entry{
		{"192.0.2.0/24", countryRecord(us)},
		{"198.51.100.0/24", countryRecord(de)},
		{"203.0.113.0/24", countryRecord(jp)},
		{"2001:db8:1::/48", countryRecord(fr)},
		{"127.0.1.0/24", countryRecord(us)},
	}
}

func write(path, dbType, description string, entries []entry) error {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		BuildEpoch:              buildEpoch,
		DatabaseType:            dbType,
		Description:             map[string]string{"en": description},
		Languages:               []string{"en"},
		IPVersion:               6,
		RecordSize:              28,
		IncludeReservedNetworks: true,
		// IPv4 aliasing stays on (the default), so IPv4 lookups work in
		// this IPv6 tree.
	})
	if err != nil {
		return fmt.Errorf("creating tree for %s: %w", path, err)
	}
	for _, e := range entries {
		_, network, err := net.ParseCIDR(e.cidr)
		if err != nil {
			return fmt.Errorf("parsing %s: %w", e.cidr, err)
		}
		if err := tree.Insert(network, e.record); err != nil {
			return fmt.Errorf("inserting %s: %w", e.cidr, err)
		}
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	log.Printf("wrote %s (%s, %d networks)", path, dbType, len(entries))
	return nil
}

func main() {
	root := flag.String("root", filepath.Join("..", "..", ".."),
		"repository root (default: ../../.., i.e. run from tests/data/geoip)")
	cityOut := flag.String("city-out", filepath.Join("zones", "demo-geoip.mmdb"),
		"GeoIP2-City output path, relative to -root unless absolute")
	countryOut := flag.String("country-out", filepath.Join("tests", "data", "country.mmdb"),
		"GeoLite2-Country output path, relative to -root unless absolute")
	flag.Parse()

	// Sanity check that -root really is meridian's repository root.
	if _, err := os.Stat(filepath.Join(*root, "Cargo.toml")); err != nil {
		log.Fatalf("%s does not look like the repo root (no Cargo.toml); run from tests/data/geoip or pass -root", *root)
	}

	resolve := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(*root, p)
	}

	if err := write(resolve(*cityOut), "GeoIP2-City",
		"meridian demo GeoIP2-City fixture (documentation/loopback prefixes only)",
		cityEntries()); err != nil {
		log.Fatal(err)
	}
	if err := write(resolve(*countryOut), "GeoLite2-Country",
		"meridian GeoLite2-Country test fixture (documentation/loopback prefixes only)",
		countryEntries()); err != nil {
		log.Fatal(err)
	}
}
