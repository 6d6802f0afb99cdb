// Command alibabacloud-probe drives mock-kms's `aliyun` dialect with Alibaba Cloud's newer Go
// SDK, github.com/alibabacloud-go/kms-20160120/v3 on darabonba-openapi v2 (what
// ack-secret-manager uses): requests signed ACS3-HMAC-SHA256, the operation in x-acs-action.
//
// It prints one JSON line per case: {"case", "ok", and either "detail" or the SDK's tea.SDKError
// fields "status", "code", "message"}. Plaintexts are never printed, only whether they
// round-tripped. Phases (-phase): roundtrip, errors, throttled (see the other probes), and the
// secrets manager's (secrets.go: secrets, secrets-reader, secrets-throttled).
//
// A skewed timestamp, a replayed nonce and an empty nonce are sent by the SDK itself, with the
// header overridden through RuntimeOptions.ExtendsParameters (the SDK signs the merged headers);
// an unknown operation through the SDK's generic CallApi.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"time"

	openapi "github.com/alibabacloud-go/darabonba-openapi/v2/client"
	kms "github.com/alibabacloud-go/kms-20160120/v3/client"
	util "github.com/alibabacloud-go/tea-utils/v2/service"
	"github.com/alibabacloud-go/tea/tea"
	"kms-lab.io/mock-kms/sdk-probes/internal/probe"
)

// report prints a case from the SDK's error (nil: success); true if it succeeded.
func report(name string, err error, detail map[string]interface{}) bool {
	if err == nil {
		probe.Emit(probe.Line{Case: name, Ok: true, Detail: detail})
		return true
	}
	if sdk, ok := err.(*tea.SDKError); ok {
		// The SDK keeps the error body in Data (JSON): its RequestId names the audit record.
		data := map[string]interface{}{}
		_ = json.Unmarshal([]byte(tea.StringValue(sdk.Data)), &data)
		requestID, _ := data["RequestId"].(string)
		probe.Emit(probe.Line{Case: name, Status: tea.IntValue(sdk.StatusCode), Code: tea.StringValue(sdk.Code), Message: tea.StringValue(sdk.Message), RequestID: requestID})
		return false
	}
	probe.Emit(probe.Line{Case: name, Transport: err.Error()})
	return false
}

var cfg probe.Flags

func newClient(accessKey, secret string) *kms.Client {
	c, err := kms.NewClient(&openapi.Config{
		AccessKeyId:     tea.String(accessKey),
		AccessKeySecret: tea.String(secret),
		Endpoint:        tea.String(cfg.Endpoint),
		Protocol:        tea.String("http"),
		RegionId:        tea.String("cn-hangzhou"),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot make the SDK client:", err)
		os.Exit(1)
	}
	return c
}

func encrypt(c *kms.Client, name, key, plaintext string, runtime *util.RuntimeOptions) string {
	req := &kms.EncryptRequest{KeyId: tea.String(key), Plaintext: tea.String(plaintext), EncryptionContext: map[string]interface{}{"purpose": "sdk-probe"}}
	if runtime == nil {
		runtime = &util.RuntimeOptions{}
	}
	resp, err := c.EncryptWithOptions(req, runtime)
	if err != nil {
		report(name, err, nil)
		return ""
	}
	report(name, nil, map[string]interface{}{"keyId": tea.StringValue(resp.Body.KeyId), "keyVersionId": tea.StringValue(resp.Body.KeyVersionId) != ""})
	return tea.StringValue(resp.Body.CiphertextBlob)
}

func decrypt(c *kms.Client, name, blob, want string) {
	resp, err := c.Decrypt(&kms.DecryptRequest{CiphertextBlob: tea.String(blob), EncryptionContext: map[string]interface{}{"purpose": "sdk-probe"}})
	if err != nil {
		report(name, err, nil)
		return
	}
	report(name, nil, map[string]interface{}{"roundTrip": tea.StringValue(resp.Body.Plaintext) == want, "keyId": tea.StringValue(resp.Body.KeyId)})
}

func describe(c *kms.Client, name, key string) {
	resp, err := c.DescribeKey(&kms.DescribeKeyRequest{KeyId: tea.String(key)})
	if err != nil {
		report(name, err, nil)
		return
	}
	report(name, nil, map[string]interface{}{"keyState": tea.StringValue(resp.Body.KeyMetadata.KeyState)})
}

func roundtrip(c *kms.Client) {
	secret := base64.StdEncoding.EncodeToString([]byte("a Secret's DEK, from the alibabacloud-go SDK"))
	blob := encrypt(c, "Encrypt", cfg.Key, secret, nil)
	decrypt(c, "Decrypt", blob, secret)

	if resp, err := c.GenerateDataKey(&kms.GenerateDataKeyRequest{KeyId: tea.String(cfg.Key), KeySpec: tea.String("AES_256"), EncryptionContext: map[string]interface{}{"purpose": "sdk-probe"}}); report("GenerateDataKey", err, nil) {
		decrypt(c, "Decrypt(GenerateDataKey)", tea.StringValue(resp.Body.CiphertextBlob), tea.StringValue(resp.Body.Plaintext))
	}
	_, err := c.GenerateDataKeyWithoutPlaintext(&kms.GenerateDataKeyWithoutPlaintextRequest{KeyId: tea.String(cfg.Key), NumberOfBytes: tea.Int32(16)})
	report("GenerateDataKeyWithoutPlaintext", err, nil)
	describe(c, "DescribeKey", cfg.Key)

	if listed, err := c.ListKeys(&kms.ListKeysRequest{PageNumber: tea.Int32(2), PageSize: tea.Int32(1)}); err != nil {
		report("ListKeys", err, nil)
	} else {
		ids := []string{}
		for _, key := range listed.Body.Keys.Key {
			ids = append(ids, tea.StringValue(key.KeyId))
		}
		report("ListKeys", nil, map[string]interface{}{"keyIds": ids, "totalCount": tea.Int32Value(listed.Body.TotalCount), "pageNumber": tea.Int32Value(listed.Body.PageNumber)})
	}

	if resp, err := c.CreateKeyVersion(&kms.CreateKeyVersionRequest{KeyId: tea.String(cfg.Key)}); report("CreateKeyVersion", err, nil) {
		version := resp.Body.KeyVersion.KeyVersionId
		got, err := c.DescribeKeyVersion(&kms.DescribeKeyVersionRequest{KeyId: tea.String(cfg.Key), KeyVersionId: version})
		same := err == nil && tea.StringValue(got.Body.KeyVersion.KeyVersionId) == tea.StringValue(version)
		report("DescribeKeyVersion", err, map[string]interface{}{"same": same})
	}
	if listed, err := c.ListKeyVersions(&kms.ListKeyVersionsRequest{KeyId: tea.String(cfg.Key)}); err != nil {
		report("ListKeyVersions", err, nil)
	} else {
		report("ListKeyVersions", nil, map[string]interface{}{"versions": len(listed.Body.KeyVersions.KeyVersion), "totalCount": tea.Int32Value(listed.Body.TotalCount)})
	}
	decrypt(c, "Decrypt(after CreateKeyVersion)", blob, secret)

	_, err = c.UpdateRotationPolicy(&kms.UpdateRotationPolicyRequest{KeyId: tea.String(cfg.Key), EnableAutomaticRotation: tea.Bool(true), RotationInterval: tea.String("604800s")})
	report("UpdateRotationPolicy", err, nil)
	_, err = c.DisableKey(&kms.DisableKeyRequest{KeyId: tea.String(cfg.Key)})
	report("DisableKey", err, nil)
	describe(c, "DescribeKey(disabled)", cfg.Key)
	_, err = c.EnableKey(&kms.EnableKeyRequest{KeyId: tea.String(cfg.Key)})
	report("EnableKey", err, nil)
	_, err = c.ScheduleKeyDeletion(&kms.ScheduleKeyDeletionRequest{KeyId: tea.String(cfg.DoomedKey), PendingWindowInDays: tea.Int32(7)})
	report("ScheduleKeyDeletion", err, nil)
	describe(c, "DescribeKey(pending deletion)", cfg.DoomedKey)
}

// withHeaders has the SDK send (and sign) these header values instead of its own.
func withHeaders(headers map[string]string) *util.RuntimeOptions {
	merged := map[string]*string{}
	for k, v := range headers {
		merged[k] = tea.String(v)
	}
	return &util.RuntimeOptions{ExtendsParameters: &util.ExtendsParameters{Headers: merged}}
}

func errors(c *kms.Client) {
	encrypt(newClient(cfg.AccessKey, cfg.SecretKey+"-wrong"), "wrong secret key", cfg.Key, "x", nil)
	encrypt(newClient("AK-NOBODY", cfg.SecretKey), "unknown access key", cfg.Key, "x", nil)
	encrypt(c, "unknown key", "no-such-key", "x", nil)
	_, err := c.DisableKey(&kms.DisableKeyRequest{KeyId: tea.String(cfg.Key)})
	report("DisableKey", err, nil)
	encrypt(c, "disabled key", cfg.Key, "x", nil)
	_, err = c.EnableKey(&kms.EnableKeyRequest{KeyId: tea.String(cfg.Key)})
	report("EnableKey", err, nil)

	skewed := time.Now().Add(-time.Hour).UTC().Format("2006-01-02T15:04:05Z")
	encrypt(c, "skewed timestamp", cfg.Key, "x", withHeaders(map[string]string{"x-acs-date": skewed}))
	nonce := fmt.Sprintf("probe-nonce-%d", time.Now().UnixNano())
	encrypt(c, "first use of a nonce", cfg.Key, "x", withHeaders(map[string]string{"x-acs-signature-nonce": nonce}))
	encrypt(c, "replayed nonce", cfg.Key, "x", withHeaders(map[string]string{"x-acs-signature-nonce": nonce}))
	encrypt(c, "missing header", cfg.Key, "x", withHeaders(map[string]string{"x-acs-signature-nonce": ""}))
	_, err = c.ListKeys(&kms.ListKeysRequest{Filters: tea.String(`[{"Key":"KeyState","Values":["Enabled"]}]`)})
	report("ListKeys(Filters)", err, nil)

	params := &openapi.Params{
		Action:      tea.String("Frobnicate"),
		Version:     tea.String("2016-01-20"),
		Protocol:    tea.String("HTTP"),
		Pathname:    tea.String("/"),
		Method:      tea.String("POST"),
		AuthType:    tea.String("AK"),
		Style:       tea.String("RPC"),
		ReqBodyType: tea.String("formData"),
		BodyType:    tea.String("json"),
	}
	_, err = c.CallApi(params, &openapi.OpenApiRequest{Query: map[string]*string{"KeyId": tea.String(cfg.Key)}}, &util.RuntimeOptions{})
	report("unknown action", err, nil)
}

func main() {
	probe.Main("alibabacloud-probe", probe.Phases{
		Roundtrip: func(f probe.Flags) { cfg = f; roundtrip(newClient(f.AccessKey, f.SecretKey)) },
		Errors:    func(f probe.Flags) { cfg = f; errors(newClient(f.AccessKey, f.SecretKey)) },
		Encrypt: func(f probe.Flags, name string) {
			cfg = f
			encrypt(newClient(f.AccessKey, f.SecretKey), name, f.Key, "x", nil)
		},
		Extra: map[string]func(probe.Flags){
			"secrets":           secrets,
			"secrets-reader":    secretsReader,
			"secrets-throttled": secretsThrottled,
		},
	})
}
