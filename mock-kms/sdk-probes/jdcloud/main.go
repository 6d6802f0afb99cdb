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
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/jdcloud-api/jdcloud-sdk-go/core"
	"github.com/jdcloud-api/jdcloud-sdk-go/services/kms/apis"
	"github.com/jdcloud-api/jdcloud-sdk-go/services/kms/client"
	"kms-lab.io/mock-kms/sdk-probes/internal/probe"
)

// report prints a case from the SDK's (response error, transport error) pair; true if it succeeded.
func report(name string, err error, e core.ErrorResponse, requestID string, detail map[string]interface{}) bool {
	if err != nil {
		probe.Emit(probe.Line{Case: name, Transport: err.Error()})
		return false
	}
	if e.Code != 0 {
		probe.Emit(probe.Line{Case: name, Code: e.Code, Status: e.Status, Message: e.Message, RequestID: requestID})
		return false
	}
	probe.Emit(probe.Line{Case: name, Ok: true, RequestID: requestID, Detail: detail})
	return true
}

var cfg probe.Flags

func newClient(secret string) *client.KmsClient {
	c := client.NewKmsClient(core.NewCredentials(cfg.AccessKey, secret))
	c.SetConfig(&core.Config{Scheme: core.SchemeHttp, Endpoint: cfg.Endpoint, Timeout: 10 * time.Second})
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
	blob := encrypt(c, "Encrypt", cfg.Key, secret)
	decrypt(c, "Decrypt", cfg.Key, blob, secret)

	if resp, err := c.GenerateDataKey(apis.NewGenerateDataKeyRequest(cfg.Key)); resp != nil {
		dataKey, _ := base64.StdEncoding.DecodeString(resp.Result.Plaintext)
		if report("GenerateDataKey", err, resp.Error, resp.RequestID, map[string]interface{}{"bytes": len(dataKey)}) {
			decrypt(c, "Decrypt(GenerateDataKey)", cfg.Key, resp.Result.CiphertextBlob, dataKey)
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
	describe("DescribeKey", cfg.Key)

	if resp, err := c.KeyRotation(apis.NewKeyRotationRequest(cfg.Key)); resp != nil {
		report("KeyRotation", err, resp.Error, resp.RequestID, nil)
	}
	decrypt(c, "Decrypt(after KeyRotation)", cfg.Key, blob, secret)

	var versions []string
	if resp, err := c.DescribeKeyDetail(apis.NewDescribeKeyDetailRequest(cfg.Key)); resp != nil {
		for _, v := range resp.Result.KeyDetail.KeyVersionList {
			versions = append(versions, v.KeyVersion)
		}
		report("DescribeKeyDetail", err, resp.Error, resp.RequestID, map[string]interface{}{"keyVersionCount": resp.Result.KeyDetail.KeyVersionCount, "versions": len(versions)})
	}
	if len(versions) > 0 {
		first := versions[0]
		if resp, err := c.DisableKeyVersion(apis.NewDisableKeyVersionRequest(cfg.Key, first)); resp != nil {
			report("DisableKeyVersion", err, resp.Error, resp.RequestID, nil)
		}
		decrypt(c, "Decrypt(disabled version)", cfg.Key, blob, secret)
		if resp, err := c.EnableKeyVersion(apis.NewEnableKeyVersionRequest(cfg.Key, first)); resp != nil {
			report("EnableKeyVersion", err, resp.Error, resp.RequestID, nil)
		}
	}

	if resp, err := c.DisableKey(apis.NewDisableKeyRequest(cfg.Key)); resp != nil {
		report("DisableKey", err, resp.Error, resp.RequestID, nil)
	}
	describe("DescribeKey(disabled)", cfg.Key)
	if resp, err := c.EnableKey(apis.NewEnableKeyRequest(cfg.Key)); resp != nil {
		report("EnableKey", err, resp.Error, resp.RequestID, nil)
	}

	del := apis.NewScheduleKeyDeletionRequest(cfg.DoomedKey)
	del.SetDelayDays(7)
	if resp, err := c.ScheduleKeyDeletion(del); resp != nil {
		report("ScheduleKeyDeletion", err, resp.Error, resp.RequestID, nil)
	}
	describe("DescribeKey(pending deletion)", cfg.DoomedKey)
}

// raw sends a request signed by the SDK's own signer at signTime, after edit (may be nil), and
// reads the answer into the SDK's own response type.
func raw(name, method, path string, body string, signTime time.Time, edit func(*http.Request), times int) {
	req, _ := http.NewRequest(method, "http://"+cfg.Endpoint+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	signer := core.NewSigner(*core.NewCredentials(cfg.AccessKey, cfg.SecretKey), core.NewDummyLogger())
	if _, err := signer.Sign(req, strings.NewReader(body), "kms", "jdcloud-api", signTime); err != nil {
		probe.Emit(probe.Line{Case: name, Transport: err.Error()})
		return
	}
	if edit != nil {
		edit(req)
	}
	for i := 0; i < times; i++ {
		req.Body = io.NopCloser(strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			probe.Emit(probe.Line{Case: name, Transport: err.Error()})
			return
		}
		content, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		parsed := apis.EncryptResponse{}
		if err := json.Unmarshal(content, &parsed); err != nil {
			probe.Emit(probe.Line{Case: name, Transport: "answer is not the SDK's response shape: " + err.Error()})
			return
		}
		if i+1 == times {
			report(name, nil, parsed.Error, parsed.RequestID, nil)
		}
	}
}

func errors(c *client.KmsClient) {
	body := `{"plaintext":"` + base64.StdEncoding.EncodeToString([]byte("x")) + `"}`
	path := "/v1/key/" + cfg.Key + ":Encrypt"
	encrypt(newClient(cfg.SecretKey+"-wrong"), "wrong secret key", cfg.Key, []byte("x"))
	unknown := client.NewKmsClient(core.NewCredentials("AK-NOBODY", cfg.SecretKey))
	unknown.SetConfig(&core.Config{Scheme: core.SchemeHttp, Endpoint: cfg.Endpoint, Timeout: 10 * time.Second})
	unknown.DisableLogger()
	encrypt(unknown, "unknown access key", cfg.Key, []byte("x"))
	encrypt(c, "unknown key", "no-such-key", []byte("x"))
	if resp, err := c.DisableKey(apis.NewDisableKeyRequest(cfg.Key)); resp != nil {
		report("DisableKey", err, resp.Error, resp.RequestID, nil)
	}
	encrypt(c, "disabled key", cfg.Key, []byte("x"))
	if resp, err := c.EnableKey(apis.NewEnableKeyRequest(cfg.Key)); resp != nil {
		report("EnableKey", err, resp.Error, resp.RequestID, nil)
	}
	raw("skewed timestamp", "POST", path, body, time.Now().Add(-time.Hour), nil, 1)
	raw("replayed nonce", "POST", path, body, time.Now(), nil, 2)
	raw("missing header", "POST", path, body, time.Now(), func(r *http.Request) { r.Header.Del("x-jdcloud-nonce") }, 1)
	raw("unknown action", "POST", "/v1/key/"+cfg.Key+":Frobnicate", body, time.Now(), nil, 1)
}

func main() {
	probe.Main("jdcloud-probe", probe.Phases{
		Roundtrip: func(f probe.Flags) { cfg = f; roundtrip(newClient(f.SecretKey)) },
		Errors:    func(f probe.Flags) { cfg = f; errors(newClient(f.SecretKey)) },
		Encrypt: func(f probe.Flags, name string) {
			cfg = f
			encrypt(newClient(f.SecretKey), name, f.Key, []byte("x"))
		},
	})
}
