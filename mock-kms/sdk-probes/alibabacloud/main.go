// Command alibabacloud-probe drives mock-kms's `aliyun` dialect with Alibaba Cloud's newer Go
// SDK, github.com/alibabacloud-go/kms-20160120/v3 on darabonba-openapi v2 (what
// ack-secret-manager uses): requests signed ACS3-HMAC-SHA256, the operation in x-acs-action.
//
// It prints one JSON line per case: {"case", "ok", and either "detail" or the SDK's tea.SDKError
// fields "status", "code", "message"}. Plaintexts are never printed, only whether they
// round-tripped. Phases (-phase): roundtrip, errors, throttled (see the other probes).
//
// A skewed timestamp, a replayed nonce and an empty nonce are sent by the SDK itself, with the
// header overridden through RuntimeOptions.ExtendsParameters (the SDK signs the merged headers);
// an unknown operation through the SDK's generic CallApi.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	openapi "github.com/alibabacloud-go/darabonba-openapi/v2/client"
	kms "github.com/alibabacloud-go/kms-20160120/v3/client"
	util "github.com/alibabacloud-go/tea-utils/v2/service"
	"github.com/alibabacloud-go/tea/tea"
)

type line struct {
	Case      string                 `json:"case"`
	Ok        bool                   `json:"ok"`
	Status    int                    `json:"status,omitempty"`
	Code      string                 `json:"code,omitempty"`
	Message   string                 `json:"message,omitempty"`
	RequestID string                 `json:"requestId,omitempty"`
	Transport string                 `json:"transport,omitempty"`
	Detail    map[string]interface{} `json:"detail,omitempty"`
}

func emit(l line) {
	out, _ := json.Marshal(l)
	fmt.Println(string(out))
}

// report prints a case from the SDK's error (nil: success); true if it succeeded.
func report(name string, err error, detail map[string]interface{}) bool {
	if err == nil {
		emit(line{Case: name, Ok: true, Detail: detail})
		return true
	}
	if sdk, ok := err.(*tea.SDKError); ok {
		// The SDK keeps the error body in Data (JSON): its RequestId names the audit record.
		data := map[string]interface{}{}
		_ = json.Unmarshal([]byte(tea.StringValue(sdk.Data)), &data)
		requestID, _ := data["RequestId"].(string)
		emit(line{Case: name, Status: tea.IntValue(sdk.StatusCode), Code: tea.StringValue(sdk.Code), Message: tea.StringValue(sdk.Message), RequestID: requestID})
		return false
	}
	emit(line{Case: name, Transport: err.Error()})
	return false
}

var (
	endpoint = flag.String("endpoint", "", "host:port of the mock KMS's aliyun listener")
	ak       = flag.String("ak", "", "access key id")
	sk       = flag.String("sk", "", "access key secret")
	keyID    = flag.String("key", "lab-key", "the key to use")
	doomed   = flag.String("doomed-key", "doomed-key", "a key the roundtrip schedules for deletion")
	phase    = flag.String("phase", "roundtrip", "roundtrip, errors or throttled")
)

func newClient(accessKey, secret string) *kms.Client {
	c, err := kms.NewClient(&openapi.Config{
		AccessKeyId:     tea.String(accessKey),
		AccessKeySecret: tea.String(secret),
		Endpoint:        tea.String(*endpoint),
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
	blob := encrypt(c, "Encrypt", *keyID, secret, nil)
	decrypt(c, "Decrypt", blob, secret)

	if resp, err := c.GenerateDataKey(&kms.GenerateDataKeyRequest{KeyId: tea.String(*keyID), KeySpec: tea.String("AES_256"), EncryptionContext: map[string]interface{}{"purpose": "sdk-probe"}}); report("GenerateDataKey", err, nil) {
		decrypt(c, "Decrypt(GenerateDataKey)", tea.StringValue(resp.Body.CiphertextBlob), tea.StringValue(resp.Body.Plaintext))
	}
	_, err := c.GenerateDataKeyWithoutPlaintext(&kms.GenerateDataKeyWithoutPlaintextRequest{KeyId: tea.String(*keyID), NumberOfBytes: tea.Int32(16)})
	report("GenerateDataKeyWithoutPlaintext", err, nil)
	describe(c, "DescribeKey", *keyID)

	if resp, err := c.CreateKeyVersion(&kms.CreateKeyVersionRequest{KeyId: tea.String(*keyID)}); report("CreateKeyVersion", err, nil) {
		version := resp.Body.KeyVersion.KeyVersionId
		got, err := c.DescribeKeyVersion(&kms.DescribeKeyVersionRequest{KeyId: tea.String(*keyID), KeyVersionId: version})
		same := err == nil && tea.StringValue(got.Body.KeyVersion.KeyVersionId) == tea.StringValue(version)
		report("DescribeKeyVersion", err, map[string]interface{}{"same": same})
	}
	if listed, err := c.ListKeyVersions(&kms.ListKeyVersionsRequest{KeyId: tea.String(*keyID)}); err != nil {
		report("ListKeyVersions", err, nil)
	} else {
		report("ListKeyVersions", nil, map[string]interface{}{"versions": len(listed.Body.KeyVersions.KeyVersion), "totalCount": tea.Int32Value(listed.Body.TotalCount)})
	}
	decrypt(c, "Decrypt(after CreateKeyVersion)", blob, secret)

	_, err = c.UpdateRotationPolicy(&kms.UpdateRotationPolicyRequest{KeyId: tea.String(*keyID), EnableAutomaticRotation: tea.Bool(true), RotationInterval: tea.String("604800s")})
	report("UpdateRotationPolicy", err, nil)
	_, err = c.DisableKey(&kms.DisableKeyRequest{KeyId: tea.String(*keyID)})
	report("DisableKey", err, nil)
	describe(c, "DescribeKey(disabled)", *keyID)
	_, err = c.EnableKey(&kms.EnableKeyRequest{KeyId: tea.String(*keyID)})
	report("EnableKey", err, nil)
	_, err = c.ScheduleKeyDeletion(&kms.ScheduleKeyDeletionRequest{KeyId: tea.String(*doomed), PendingWindowInDays: tea.Int32(7)})
	report("ScheduleKeyDeletion", err, nil)
	describe(c, "DescribeKey(pending deletion)", *doomed)
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
	encrypt(newClient(*ak, *sk+"-wrong"), "wrong secret key", *keyID, "x", nil)
	encrypt(newClient("AK-NOBODY", *sk), "unknown access key", *keyID, "x", nil)
	encrypt(c, "unknown key", "no-such-key", "x", nil)
	_, err := c.DisableKey(&kms.DisableKeyRequest{KeyId: tea.String(*keyID)})
	report("DisableKey", err, nil)
	encrypt(c, "disabled key", *keyID, "x", nil)
	_, err = c.EnableKey(&kms.EnableKeyRequest{KeyId: tea.String(*keyID)})
	report("EnableKey", err, nil)

	skewed := time.Now().Add(-time.Hour).UTC().Format("2006-01-02T15:04:05Z")
	encrypt(c, "skewed timestamp", *keyID, "x", withHeaders(map[string]string{"x-acs-date": skewed}))
	nonce := fmt.Sprintf("probe-nonce-%d", time.Now().UnixNano())
	encrypt(c, "first use of a nonce", *keyID, "x", withHeaders(map[string]string{"x-acs-signature-nonce": nonce}))
	encrypt(c, "replayed nonce", *keyID, "x", withHeaders(map[string]string{"x-acs-signature-nonce": nonce}))
	encrypt(c, "missing header", *keyID, "x", withHeaders(map[string]string{"x-acs-signature-nonce": ""}))

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
	_, err = c.CallApi(params, &openapi.OpenApiRequest{Query: map[string]*string{"KeyId": tea.String(*keyID)}}, &util.RuntimeOptions{})
	report("unknown action", err, nil)
}

func main() {
	flag.Parse()
	if *endpoint == "" || *ak == "" || *sk == "" {
		fmt.Fprintln(os.Stderr, "usage: alibabacloud-probe -endpoint HOST:PORT -ak AK -sk SK [-key K] [-phase roundtrip|errors|throttled]")
		os.Exit(2)
	}
	c := newClient(*ak, *sk)
	switch *phase {
	case "roundtrip":
		roundtrip(c)
	case "errors":
		errors(c)
	case "throttled":
		encrypt(c, "Encrypt 1", *keyID, "x", nil)
		encrypt(c, "Encrypt 2", *keyID, "x", nil)
	default:
		fmt.Fprintf(os.Stderr, "unknown -phase %q: use roundtrip, errors or throttled\n", *phase)
		os.Exit(2)
	}
}
