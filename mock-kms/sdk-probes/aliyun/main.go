// Command aliyun-probe drives mock-kms's `aliyun` dialect with Alibaba Cloud's own Go SDK
// (github.com/aliyun/alibaba-cloud-sdk-go v1.61.18, the SDK of ACK's kms plugin): the RPC API
// 2016-01-20 signed with signature v1 (HMAC-SHA1), so the dialect is proven by the SDK rather
// than by our reading of it.
//
// It prints one JSON line per case: {"case", "ok", and either "detail" or the SDK's
// errors.ServerError fields "status", "code", "message", "requestId"}. Plaintexts are never
// printed, only whether they round-tripped. Phases (-phase): roundtrip (every operation),
// errors (each documented refusal), throttled (Encrypt twice; the test sets a throttle fault).
//
// A replayed nonce and a missing parameter are sent as the SDK signed them (auth.Sign), then
// replayed or edited; their answers are read with the SDK's own errors.NewServerError.
package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/signers"
	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/kms"
	"kms-lab.io/mock-kms/sdk-probes/internal/probe"
)

// report prints a case from the SDK's error (nil: success); true if it succeeded.
func report(name string, err error, requestID string, detail map[string]interface{}) bool {
	if err == nil {
		probe.Emit(probe.Line{Case: name, Ok: true, RequestID: requestID, Detail: detail})
		return true
	}
	if server, ok := err.(*sdkerrors.ServerError); ok {
		probe.Emit(probe.Line{Case: name, Status: server.HttpStatus(), Code: server.ErrorCode(), Message: server.Message(), RequestID: server.RequestId()})
		return false
	}
	probe.Emit(probe.Line{Case: name, Transport: err.Error()})
	return false
}

var cfg probe.Flags

const region = "cn-hangzhou"

func newClient(accessKey, secret string) *kms.Client {
	c, err := kms.NewClientWithAccessKey(region, accessKey, secret)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot make the SDK client:", err)
		os.Exit(1)
	}
	c.Domain = cfg.Endpoint
	return c
}

func encrypt(c *kms.Client, name, key, plaintext string) string {
	req := kms.CreateEncryptRequest()
	req.Scheme = "http"
	req.KeyId = key
	req.Plaintext = plaintext
	req.EncryptionContext = `{"purpose":"sdk-probe"}`
	resp, err := c.Encrypt(req)
	if report(name, err, resp.RequestId, map[string]interface{}{"keyId": resp.KeyId, "keyVersionId": resp.KeyVersionId != ""}) {
		return resp.CiphertextBlob
	}
	return ""
}

func decrypt(c *kms.Client, name, blob, want string) {
	req := kms.CreateDecryptRequest()
	req.Scheme = "http"
	req.CiphertextBlob = blob
	req.EncryptionContext = `{"purpose":"sdk-probe"}`
	resp, err := c.Decrypt(req)
	report(name, err, resp.RequestId, map[string]interface{}{"roundTrip": resp.Plaintext == want, "keyId": resp.KeyId})
}

func describe(c *kms.Client, name, key string) {
	req := kms.CreateDescribeKeyRequest()
	req.Scheme = "http"
	req.KeyId = key
	resp, err := c.DescribeKey(req)
	report(name, err, resp.RequestId, map[string]interface{}{"keyState": resp.KeyMetadata.KeyState, "primaryKeyVersion": resp.KeyMetadata.PrimaryKeyVersion != ""})
}

func roundtrip(c *kms.Client) {
	secret := base64.StdEncoding.EncodeToString([]byte("a Secret's DEK, from the Alibaba Cloud SDK"))
	blob := encrypt(c, "Encrypt", cfg.Key, secret)
	decrypt(c, "Decrypt", blob, secret)

	gdk := kms.CreateGenerateDataKeyRequest()
	gdk.Scheme = "http"
	gdk.KeyId = cfg.Key
	gdk.KeySpec = "AES_256"
	gdk.EncryptionContext = `{"purpose":"sdk-probe"}`
	if resp, err := c.GenerateDataKey(gdk); report("GenerateDataKey", err, resp.RequestId, nil) {
		decrypt(c, "Decrypt(GenerateDataKey)", resp.CiphertextBlob, resp.Plaintext)
	}
	gdkw := kms.CreateGenerateDataKeyWithoutPlaintextRequest()
	gdkw.Scheme = "http"
	gdkw.KeyId = cfg.Key
	gdkw.NumberOfBytes = requests.NewInteger(16)
	resp, err := c.GenerateDataKeyWithoutPlaintext(gdkw)
	report("GenerateDataKeyWithoutPlaintext", err, resp.RequestId, map[string]interface{}{"ciphertext": resp.CiphertextBlob != ""})

	describe(c, "DescribeKey", cfg.Key)

	keys := kms.CreateListKeysRequest()
	keys.Scheme = "http"
	keys.PageNumber = requests.NewInteger(2)
	keys.PageSize = requests.NewInteger(1)
	listedKeys, err := c.ListKeys(keys)
	ids := []string{}
	for _, key := range listedKeys.Keys.Key {
		ids = append(ids, key.KeyId)
	}
	report("ListKeys", err, listedKeys.RequestId, map[string]interface{}{"keyIds": ids, "totalCount": listedKeys.TotalCount, "pageNumber": listedKeys.PageNumber})

	rotate := kms.CreateCreateKeyVersionRequest()
	rotate.Scheme = "http"
	rotate.KeyId = cfg.Key
	if resp, err := c.CreateKeyVersion(rotate); report("CreateKeyVersion", err, resp.RequestId, nil) {
		one := kms.CreateDescribeKeyVersionRequest()
		one.Scheme = "http"
		one.KeyId = cfg.Key
		one.KeyVersionId = resp.KeyVersion.KeyVersionId
		got, err := c.DescribeKeyVersion(one)
		report("DescribeKeyVersion", err, got.RequestId, map[string]interface{}{"same": got.KeyVersion.KeyVersionId == resp.KeyVersion.KeyVersionId})
	}
	list := kms.CreateListKeyVersionsRequest()
	list.Scheme = "http"
	list.KeyId = cfg.Key
	listed, err := c.ListKeyVersions(list)
	report("ListKeyVersions", err, listed.RequestId, map[string]interface{}{"versions": len(listed.KeyVersions.KeyVersion), "totalCount": listed.TotalCount})
	decrypt(c, "Decrypt(after CreateKeyVersion)", blob, secret)

	policy := kms.CreateUpdateRotationPolicyRequest()
	policy.Scheme = "http"
	policy.KeyId = cfg.Key
	policy.EnableAutomaticRotation = requests.NewBoolean(true)
	policy.RotationInterval = "604800s"
	updated, err := c.UpdateRotationPolicy(policy)
	report("UpdateRotationPolicy", err, updated.RequestId, nil)

	disable := kms.CreateDisableKeyRequest()
	disable.Scheme = "http"
	disable.KeyId = cfg.Key
	disabled, err := c.DisableKey(disable)
	report("DisableKey", err, disabled.RequestId, nil)
	describe(c, "DescribeKey(disabled)", cfg.Key)
	enable := kms.CreateEnableKeyRequest()
	enable.Scheme = "http"
	enable.KeyId = cfg.Key
	enabled, err := c.EnableKey(enable)
	report("EnableKey", err, enabled.RequestId, nil)

	del := kms.CreateScheduleKeyDeletionRequest()
	del.Scheme = "http"
	del.KeyId = cfg.DoomedKey
	del.PendingWindowInDays = requests.NewInteger(7)
	deleted, err := c.ScheduleKeyDeletion(del)
	report("ScheduleKeyDeletion", err, deleted.RequestId, nil)
	describe(c, "DescribeKey(pending deletion)", cfg.DoomedKey)
}

// signed returns an Encrypt request as the SDK signs it (signature v1), ready to send.
func signed(edit func(params map[string]string)) *http.Request {
	req := kms.CreateEncryptRequest()
	req.Scheme = "http"
	req.Domain = cfg.Endpoint
	req.KeyId = cfg.Key
	req.Plaintext = "x"
	if err := requests.InitParams(req); err != nil {
		fmt.Fprintln(os.Stderr, "cannot build the request:", err)
		os.Exit(1)
	}
	signer := signers.NewAccessKeySigner(credentials.NewAccessKeyCredential(cfg.AccessKey, cfg.SecretKey))
	if err := auth.Sign(req, signer, region); err != nil {
		fmt.Fprintln(os.Stderr, "cannot sign the request:", err)
		os.Exit(1)
	}
	if edit != nil {
		edit(req.GetQueryParams())
	}
	httpReq, err := http.NewRequest(req.GetMethod(), req.BuildUrl(), req.GetBodyReader())
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot build the request:", err)
		os.Exit(1)
	}
	for k, v := range req.GetHeaders() {
		httpReq.Header.Set(k, v)
	}
	return httpReq
}

// send sends req `times` times and reports the last answer through the SDK's ServerError.
func send(name string, req *http.Request, times int) {
	for i := 0; i < times; i++ {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			probe.Emit(probe.Line{Case: name, Transport: err.Error()})
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if i+1 < times {
			continue
		}
		if resp.StatusCode < 400 {
			report(name, nil, "", nil)
		} else {
			report(name, sdkerrors.NewServerError(resp.StatusCode, string(body), ""), "", nil)
		}
	}
}

func errors(c *kms.Client) {
	encrypt(newClient(cfg.AccessKey, cfg.SecretKey+"-wrong"), "wrong secret key", cfg.Key, "x")
	encrypt(newClient("AK-NOBODY", cfg.SecretKey), "unknown access key", cfg.Key, "x")
	encrypt(c, "unknown key", "no-such-key", "x")
	disable := kms.CreateDisableKeyRequest()
	disable.Scheme = "http"
	disable.KeyId = cfg.Key
	disabled, err := c.DisableKey(disable)
	report("DisableKey", err, disabled.RequestId, nil)
	encrypt(c, "disabled key", cfg.Key, "x")
	enable := kms.CreateEnableKeyRequest()
	enable.Scheme = "http"
	enable.KeyId = cfg.Key
	enabled, err := c.EnableKey(enable)
	report("EnableKey", err, enabled.RequestId, nil)
	send("replayed nonce", signed(nil), 2)
	send("missing parameter", signed(func(p map[string]string) { delete(p, "SignatureNonce") }), 1)

	unknown := requests.NewCommonRequest()
	unknown.Scheme = "http"
	unknown.Domain = cfg.Endpoint
	unknown.Version = "2016-01-20"
	unknown.ApiName = "Frobnicate"
	unknown.QueryParams["KeyId"] = cfg.Key
	_, err = c.ProcessCommonRequest(unknown)
	report("unknown action", err, "", nil)
}

func main() {
	probe.Main("aliyun-probe", probe.Phases{
		Roundtrip: func(f probe.Flags) { cfg = f; roundtrip(newClient(f.AccessKey, f.SecretKey)) },
		Errors:    func(f probe.Flags) { cfg = f; errors(newClient(f.AccessKey, f.SecretKey)) },
		Encrypt: func(f probe.Flags, name string) {
			cfg = f
			encrypt(newClient(f.AccessKey, f.SecretKey), name, f.Key, "x")
		},
	})
}
