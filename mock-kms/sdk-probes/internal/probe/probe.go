// Package probe is what the SDK probes share: their flags, and the JSON line each prints per
// case (mock-kms/tests/common/probe.rs reads them). A probe never prints a plaintext, a key or
// the secret key: only whether a value round-tripped, and the SDK's own error fields.
package probe

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
)

// Line is one case: success with Detail, or the SDK's error fields (Code and Status as that SDK
// names them: JD Cloud's numeric code and status name, Alibaba's code string and HTTP status).
type Line struct {
	Case      string                 `json:"case"`
	Ok        bool                   `json:"ok"`
	Code      interface{}            `json:"code,omitempty"`
	Status    interface{}            `json:"status,omitempty"`
	Message   string                 `json:"message,omitempty"`
	RequestID string                 `json:"requestId,omitempty"`
	Transport string                 `json:"transport,omitempty"`
	Detail    map[string]interface{} `json:"detail,omitempty"`
}

// Emit prints l as one JSON line.
func Emit(l Line) {
	out, _ := json.Marshal(l)
	fmt.Println(string(out))
}

// Flags are every probe's command line.
type Flags struct {
	Endpoint, AccessKey, SecretKey, Key, DoomedKey string
}

// Phases are what a probe does in each -phase: Roundtrip (every operation), Errors (each
// documented refusal), and Encrypt (one Encrypt, reported under the name given), which the
// throttled phase calls twice (the test sets a fault, a policy or a seal first).
type Phases struct {
	Roundtrip func(Flags)
	Errors    func(Flags)
	Encrypt   func(f Flags, name string)
	// Extra are a probe's own phases, by name (the alibabacloud probe's secrets manager).
	Extra map[string]func(Flags)
}

// Main parses the flags and runs the -phase the test asked for.
func Main(name string, phases Phases) {
	var f Flags
	flag.StringVar(&f.Endpoint, "endpoint", "", "host:port of the mock KMS's listener")
	flag.StringVar(&f.AccessKey, "ak", "", "access key")
	flag.StringVar(&f.SecretKey, "sk", "", "secret key")
	flag.StringVar(&f.Key, "key", "lab-key", "the key to use")
	flag.StringVar(&f.DoomedKey, "doomed-key", "doomed-key", "a key the roundtrip schedules for deletion")
	phase := flag.String("phase", "roundtrip", "roundtrip, errors, throttled, or one of the probe's own")
	flag.Parse()
	run := map[string]func(Flags){
		"roundtrip": phases.Roundtrip,
		"errors":    phases.Errors,
		"throttled": func(f Flags) {
			phases.Encrypt(f, "Encrypt 1")
			phases.Encrypt(f, "Encrypt 2")
		},
	}[*phase]
	if extra, ok := phases.Extra[*phase]; ok {
		run = extra
	}
	if f.Endpoint == "" || f.AccessKey == "" || f.SecretKey == "" || run == nil {
		fmt.Fprintf(os.Stderr, "usage: %s -endpoint HOST:PORT -ak AK -sk SK [-key K] [-doomed-key K] [-phase roundtrip|errors|throttled|…]\n", name)
		os.Exit(2)
	}
	run(f)
}
