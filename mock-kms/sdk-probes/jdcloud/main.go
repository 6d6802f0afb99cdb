// Command jdcloud-probe drives mock-kms's `jdcloud` dialect with JD Cloud's own Go SDK
// (github.com/jdcloud-api/jdcloud-sdk-go v1.16.0, the SDK the JD Cloud KMS plugin is built on),
// so the dialect is proven by the SDK rather than by our reading of it.
//
// It prints one JSON line per case: {"case", "ok", and either "detail" or the SDK's error
// fields "code", "status", "message"}. Plaintexts and keys are never printed, only whether
// they round-tripped. Phases (-phase): roundtrip (every operation), errors (each documented
// refusal), throttled (Encrypt twice; the test sets a throttle fault first).
//
// Cases the SDK's client cannot produce (a skewed timestamp, a replayed nonce, a missing
// header, an unknown operation) are sent with the SDK's own signer (core.Signer) and read
// back into the SDK's own response type.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/jdcloud-api/jdcloud-sdk-go/core"
	"github.com/jdcloud-api/jdcloud-sdk-go/services/kms/apis"
	"github.com/jdcloud-api/jdcloud-sdk-go/services/kms/client"
)

type line struct {
	Case      string                 `json:"case"`
	Ok        bool                   `json:"ok"`
	Code      int                    `json:"code,omitempty"`
	Status    string                 `json:"status,omitempty"`
	Message   string                 `json:"message,omitempty"`
	RequestID string                 `json:"requestId,omitempty"`
	Transport string                 `json:"transport,omitempty"`
	Detail    map[string]interface{} `json:"detail,omitempty"`
}

func emit(l line) {
	out, _ := json.Marshal(l)
	fmt.Println(string(out))
}

// report prints a case from the SDK's (response error, transport error) pair; true if it succeeded.
func report(name string, err error, e core.ErrorResponse, requestID string, detail map[string]interface{}) bool {
	if err != nil {
		emit(line{Case: name, Transport: err.Error()})
		return false
	}
	if e.Code != 0 {
		emit(line{Case: name, Code: e.Code, Status: e.Status, Message: e.Message, RequestID: requestID})
		return false
	}
	emit(line{Case: name, Ok: true, RequestID: requestID, Detail: detail})
	return true
}

var (
	endpoint = flag.String("endpoint", "", "host:port of the mock KMS's jdcloud listener")
	ak       = flag.String("ak", "", "access key")
	sk       = flag.String("sk", "", "secret key")
	keyID    = flag.String("key", "lab-key", "the key to use")
	doomed   = flag.String("doomed-key", "doomed-key", "a key the roundtrip schedules for deletion")
	phase    = flag.String("phase", "roundtrip", "roundtrip, errors or throttled")
)

func newClient(secret string) *client.KmsClient {
	c := client.NewKmsClient(core.NewCredentials(*ak, secret))
	c.SetConfig(&core.Config{Scheme: core.SchemeHttp, Endpoint: *endpoint, Timeout: 10 * time.Second})
	c.DisableLogger()
	return c
}

func encrypt(c *client.KmsClient, name, key string, plaintext []byte) string {
	req := apis.NewEncryptRequest(key)
	req.SetPlaintext(base64.StdEncoding.EncodeToString(plaintext))
	resp, err := c.Encrypt(req)
	if resp == nil {
		report(name, err, core.ErrorResponse{}, "", nil)
		return ""
	}
	if report(name, err, resp.Error, resp.RequestID, map[string]interface{}{"ciphertext": resp.Result.CiphertextBlob != ""}) {
		return resp.Result.CiphertextBlob
	}
	return ""
}

func decrypt(c *client.KmsClient, name, key, blob string, want []byte) {
	req := apis.NewDecryptRequest(key)
	req.SetCiphertextBlob(blob)
	resp, err := c.Decrypt(req)
	if resp == nil {
		report(name, err, core.ErrorResponse{}, "", nil)
		return
	}
	got, _ := base64.StdEncoding.DecodeString(resp.Result.Plaintext)
	report(name, err, resp.Error, resp.RequestID, map[string]interface{}{"roundTrip": bytes.Equal(got, want)})
}

func roundtrip(c *client.KmsClient) {
	secret := []byte("a Secret's DEK, from the JD Cloud SDK")
	blob := encrypt(c, "Encrypt", *keyID, secret)
	decrypt(c, "Decrypt", *keyID, blob, secret)

	if resp, err := c.GenerateDataKey(apis.NewGenerateDataKeyRequest(*keyID)); resp != nil {
		dataKey, _ := base64.StdEncoding.DecodeString(resp.Result.Plaintext)
		if report("GenerateDataKey", err, resp.Error, resp.RequestID, map[string]interface{}{"bytes": len(dataKey)}) {
			decrypt(c, "Decrypt(GenerateDataKey)", *keyID, resp.Result.CiphertextBlob, dataKey)
		}
	} else {
		report("GenerateDataKey", err, core.ErrorResponse{}, "", nil)
	}

	describe := func(name, key string) {
		resp, err := c.DescribeKey(apis.NewDescribeKeyRequest(key))
		if resp == nil {
			report(name, err, core.ErrorResponse{}, "", nil)
			return
		}
		info := resp.Result.KeyInfo
		report(name, err, resp.Error, resp.RequestID, map[string]interface{}{"keyId": info.KeyId, "keyStatus": info.KeyStatus})
	}
	describe("DescribeKey", *keyID)

	if resp, err := c.KeyRotation(apis.NewKeyRotationRequest(*keyID)); resp != nil {
		report("KeyRotation", err, resp.Error, resp.RequestID, nil)
	}
	decrypt(c, "Decrypt(after KeyRotation)", *keyID, blob, secret)

	var versions []string
	if resp, err := c.DescribeKeyDetail(apis.NewDescribeKeyDetailRequest(*keyID)); resp != nil {
		for _, v := range resp.Result.KeyDetail.KeyVersionList {
			versions = append(versions, v.KeyVersion)
		}
		report("DescribeKeyDetail", err, resp.Error, resp.RequestID, map[string]interface{}{"keyVersionCount": resp.Result.KeyDetail.KeyVersionCount, "versions": len(versions)})
	}
	if len(versions) > 0 {
		first := versions[0]
		if resp, err := c.DisableKeyVersion(apis.NewDisableKeyVersionRequest(*keyID, first)); resp != nil {
			report("DisableKeyVersion", err, resp.Error, resp.RequestID, nil)
		}
		decrypt(c, "Decrypt(disabled version)", *keyID, blob, secret)
		if resp, err := c.EnableKeyVersion(apis.NewEnableKeyVersionRequest(*keyID, first)); resp != nil {
			report("EnableKeyVersion", err, resp.Error, resp.RequestID, nil)
		}
	}

	if resp, err := c.DisableKey(apis.NewDisableKeyRequest(*keyID)); resp != nil {
		report("DisableKey", err, resp.Error, resp.RequestID, nil)
	}
	describe("DescribeKey(disabled)", *keyID)
	if resp, err := c.EnableKey(apis.NewEnableKeyRequest(*keyID)); resp != nil {
		report("EnableKey", err, resp.Error, resp.RequestID, nil)
	}

	del := apis.NewScheduleKeyDeletionRequest(*doomed)
	del.SetDelayDays(7)
	if resp, err := c.ScheduleKeyDeletion(del); resp != nil {
		report("ScheduleKeyDeletion", err, resp.Error, resp.RequestID, nil)
	}
	describe("DescribeKey(pending deletion)", *doomed)
}

// raw sends a request signed by the SDK's own signer at signTime, after edit (may be nil), and
// reads the answer into the SDK's own response type.
func raw(name, method, path string, body string, signTime time.Time, edit func(*http.Request), times int) {
	req, _ := http.NewRequest(method, "http://"+*endpoint+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	signer := core.NewSigner(*core.NewCredentials(*ak, *sk), core.NewDummyLogger())
	if _, err := signer.Sign(req, strings.NewReader(body), "kms", "jdcloud-api", signTime); err != nil {
		emit(line{Case: name, Transport: err.Error()})
		return
	}
	if edit != nil {
		edit(req)
	}
	for i := 0; i < times; i++ {
		req.Body = io.NopCloser(strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			emit(line{Case: name, Transport: err.Error()})
			return
		}
		content, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		parsed := apis.EncryptResponse{}
		if err := json.Unmarshal(content, &parsed); err != nil {
			emit(line{Case: name, Transport: "answer is not the SDK's response shape: " + err.Error()})
			return
		}
		if i+1 == times {
			report(name, nil, parsed.Error, parsed.RequestID, nil)
		}
	}
}

func errors(c *client.KmsClient) {
	body := `{"plaintext":"` + base64.StdEncoding.EncodeToString([]byte("x")) + `"}`
	path := "/v1/key/" + *keyID + ":Encrypt"
	encrypt(newClient(*sk+"-wrong"), "wrong secret key", *keyID, []byte("x"))
	unknown := client.NewKmsClient(core.NewCredentials("AK-NOBODY", *sk))
	unknown.SetConfig(&core.Config{Scheme: core.SchemeHttp, Endpoint: *endpoint, Timeout: 10 * time.Second})
	unknown.DisableLogger()
	encrypt(unknown, "unknown access key", *keyID, []byte("x"))
	encrypt(c, "unknown key", "no-such-key", []byte("x"))
	if resp, err := c.DisableKey(apis.NewDisableKeyRequest(*keyID)); resp != nil {
		report("DisableKey", err, resp.Error, resp.RequestID, nil)
	}
	encrypt(c, "disabled key", *keyID, []byte("x"))
	if resp, err := c.EnableKey(apis.NewEnableKeyRequest(*keyID)); resp != nil {
		report("EnableKey", err, resp.Error, resp.RequestID, nil)
	}
	raw("skewed timestamp", "POST", path, body, time.Now().Add(-time.Hour), nil, 1)
	raw("replayed nonce", "POST", path, body, time.Now(), nil, 2)
	raw("missing header", "POST", path, body, time.Now(), func(r *http.Request) { r.Header.Del("x-jdcloud-nonce") }, 1)
	raw("unknown action", "POST", "/v1/key/"+*keyID+":Frobnicate", body, time.Now(), nil, 1)
}

func main() {
	flag.Parse()
	if *endpoint == "" || *ak == "" || *sk == "" {
		fmt.Fprintln(os.Stderr, "usage: jdcloud-probe -endpoint HOST:PORT -ak AK -sk SK [-key K] [-phase roundtrip|errors|throttled]")
		os.Exit(2)
	}
	c := newClient(*sk)
	switch *phase {
	case "roundtrip":
		roundtrip(c)
	case "errors":
		errors(c)
	case "throttled":
		encrypt(c, "Encrypt 1", *keyID, []byte("x"))
		encrypt(c, "Encrypt 2", *keyID, []byte("x"))
	default:
		fmt.Fprintf(os.Stderr, "unknown -phase %q: use roundtrip, errors or throttled\n", *phase)
		os.Exit(2)
	}
}
