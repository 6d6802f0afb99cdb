// The secrets-manager phases of the alibabacloud probe, with the client made as
// ack-secret-manager makes it (pkg/backend/provider/kms/client_provider.go, NewShareKMSClient):
// openapi.Config{Endpoint, Credential} and nothing else — no Protocol (so the SDK's own
// "HTTPS"), no RegionId (the endpoint is given) — and the request its kms_service.go sends:
// GetSecretValue with SecretName and, when set, VersionStage and VersionId.
//
// Phases: secrets (every operation round-trips, then each refusal), secrets-reader (what an
// access key granted only kms:GetSecretValue + kms:Decrypt can and cannot do), secrets-throttled
// (two GetSecretValue calls). The CA of the mock's TLS listener comes from SSL_CERT_FILE, as for
// any Go client. Secret values are never printed, only whether they round-tripped.
package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"

	openapi "github.com/alibabacloud-go/darabonba-openapi/v2/client"
	kms "github.com/alibabacloud-go/kms-20160120/v3/client"
	"github.com/alibabacloud-go/tea/tea"
	"github.com/aliyun/credentials-go/credentials"
	"kms-lab.io/mock-kms/sdk-probes/internal/probe"
)

const (
	dbSecret     = "db-password"
	tokenSecret  = "api-token"
	doomedSecret = "doomed-secret"
	valueV1      = "s3cr3t-v1"
	valueV2      = "s3cr3t-v2"
	// jsonValue is what ack-secret-manager's jmesPath and dataProcess read: JSON, with the
	// characters a signature's query encoding must get right (space, +, *, ~, /, %, quotes, UTF-8).
	jsonValue = `{"user": "root", "password": "p@ss w0rd+*~/%20ü", "hosts": ["a", "b"]}`
)

// wire records what the SDK put on the wire (the signature scheme and the URL scheme), then
// sends the request with the SDK's own transport.
type wire struct{ algorithm, scheme string }

func (w *wire) Call(req *http.Request, transport *http.Transport) (*http.Response, error) {
	for name, values := range req.Header {
		if strings.EqualFold(name, "Authorization") && len(values) > 0 {
			w.algorithm = strings.SplitN(values[0], " ", 2)[0]
		}
	}
	w.scheme = req.URL.Scheme
	return (&http.Client{Transport: transport}).Do(req)
}

// ackClient is a client made as ack-secret-manager makes it from a SecretStore's AK/SK.
func ackClient(accessKey, secret string, recorder *wire) *kms.Client {
	cred, err := credentials.NewCredential(new(credentials.Config).SetType("access_key").SetAccessKeyId(accessKey).SetAccessKeySecret(secret))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot make the credential:", err)
		os.Exit(1)
	}
	config := &openapi.Config{Endpoint: tea.String(cfg.Endpoint), Credential: cred}
	if recorder != nil {
		config.HttpClient = recorder
	}
	c, err := kms.NewClient(config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot make the SDK client:", err)
		os.Exit(1)
	}
	return c
}

// get is GetSecretValue as ack-secret-manager sends it (stage and version only when set).
func get(c *kms.Client, name, secret, stage, version string, want string, extended bool) *kms.GetSecretValueResponseBody {
	req := &kms.GetSecretValueRequest{SecretName: tea.String(secret)}
	if stage != "" {
		req.VersionStage = tea.String(stage)
	}
	if version != "" {
		req.VersionId = tea.String(version)
	}
	if extended {
		req.FetchExtendedConfig = tea.Bool(true)
	}
	resp, err := c.GetSecretValue(req)
	if err != nil {
		report(name, err, nil)
		return nil
	}
	b := resp.Body
	stages := []string{}
	if b.VersionStages != nil {
		for _, s := range b.VersionStages.VersionStage {
			stages = append(stages, tea.StringValue(s))
		}
	}
	report(name, nil, map[string]interface{}{
		"roundTrip":      want != "" && tea.StringValue(b.SecretData) == want,
		"versionId":      tea.StringValue(b.VersionId),
		"versionStages":  stages,
		"secretType":     tea.StringValue(b.SecretType),
		"secretDataType": tea.StringValue(b.SecretDataType),
		"createTime":     tea.StringValue(b.CreateTime) != "",
		"extended":       b.ExtendedConfig != nil || b.NextRotationDate != nil || b.AutomaticRotation != nil || b.RotationInterval != nil,
	})
	return b
}

func create(c *kms.Client, name, secret, version, value string) {
	resp, err := c.CreateSecret(&kms.CreateSecretRequest{SecretName: tea.String(secret), VersionId: tea.String(version), SecretData: tea.String(value), EncryptionKeyId: tea.String(cfg.Key), Description: tea.String("from the SDK probe")})
	if err != nil {
		report(name, err, nil)
		return
	}
	report(name, nil, map[string]interface{}{"arn": tea.StringValue(resp.Body.Arn), "versionId": tea.StringValue(resp.Body.VersionId), "secretType": tea.StringValue(resp.Body.SecretType)})
}

func put(c *kms.Client, name, secret, version, value string) {
	resp, err := c.PutSecretValue(&kms.PutSecretValueRequest{SecretName: tea.String(secret), VersionId: tea.String(version), SecretData: tea.String(value)})
	if err != nil {
		report(name, err, nil)
		return
	}
	stages := []string{}
	for _, s := range resp.Body.VersionStages.VersionStage {
		stages = append(stages, tea.StringValue(s))
	}
	report(name, nil, map[string]interface{}{"versionId": tea.StringValue(resp.Body.VersionId), "versionStages": stages})
}

func describeSecret(c *kms.Client, name, secret string) {
	resp, err := c.DescribeSecret(&kms.DescribeSecretRequest{SecretName: tea.String(secret)})
	if err != nil {
		report(name, err, nil)
		return
	}
	b := resp.Body
	report(name, nil, map[string]interface{}{"arn": tea.StringValue(b.Arn), "encryptionKeyId": tea.StringValue(b.EncryptionKeyId), "secretType": tea.StringValue(b.SecretType), "description": tea.StringValue(b.Description), "updateTime": tea.StringValue(b.UpdateTime) != ""})
}

func list(c *kms.Client, name string, number, size int32) {
	resp, err := c.ListSecrets(&kms.ListSecretsRequest{PageNumber: tea.Int32(number), PageSize: tea.Int32(size)})
	if err != nil {
		report(name, err, nil)
		return
	}
	names := []string{}
	for _, s := range resp.Body.SecretList.Secret {
		names = append(names, tea.StringValue(s.SecretName))
	}
	report(name, nil, map[string]interface{}{"names": names, "totalCount": tea.Int32Value(resp.Body.TotalCount), "pageNumber": tea.Int32Value(resp.Body.PageNumber), "pageSize": tea.Int32Value(resp.Body.PageSize)})
}

func secrets(f probe.Flags) {
	cfg = f
	recorder := &wire{}
	first := ackClient(f.AccessKey, f.SecretKey, recorder)
	c := ackClient(f.AccessKey, f.SecretKey, nil)

	create(c, "CreateSecret", dbSecret, "v1", valueV1)
	if body := get(first, "GetSecretValue", dbSecret, "", "", valueV1, false); body != nil {
		probe.Emit(probe.Line{Case: "wire", Ok: true, Detail: map[string]interface{}{"signature": recorder.algorithm, "scheme": recorder.scheme}})
	}
	put(c, "PutSecretValue", dbSecret, "v2", valueV2)
	get(c, "GetSecretValue(ACSCurrent)", dbSecret, "ACSCurrent", "", valueV2, false)
	get(c, "GetSecretValue(ACSPrevious)", dbSecret, "ACSPrevious", "", valueV1, false)
	get(c, "GetSecretValue(VersionId)", dbSecret, "", "v1", valueV1, false)
	get(c, "GetSecretValue(FetchExtendedConfig)", dbSecret, "", "", valueV2, true)
	_, err := c.UpdateSecretVersionStage(&kms.UpdateSecretVersionStageRequest{SecretName: tea.String(dbSecret), VersionStage: tea.String("ACSCurrent"), MoveToVersion: tea.String("v1")})
	report("UpdateSecretVersionStage", err, nil)
	get(c, "GetSecretValue(after UpdateSecretVersionStage)", dbSecret, "", "", valueV1, false)
	_, err = c.UpdateSecretVersionStage(&kms.UpdateSecretVersionStageRequest{SecretName: tea.String(dbSecret), VersionStage: tea.String("ACSCurrent"), MoveToVersion: tea.String("v2")})
	report("UpdateSecretVersionStage(back)", err, nil)
	describeSecret(c, "DescribeSecret", dbSecret)

	create(c, "CreateSecret(api-token)", tokenSecret, "v1", "token")
	create(c, "CreateSecret(doomed)", doomedSecret, "v1", "doomed")
	put(c, "PutSecretValue(JSON)", tokenSecret, "v2", jsonValue)
	get(c, "GetSecretValue(JSON)", tokenSecret, "", "", jsonValue, false)
	list(c, "ListSecrets(page 1)", 1, 2)
	list(c, "ListSecrets(page 2)", 2, 2)

	deleted, err := c.DeleteSecret(&kms.DeleteSecretRequest{SecretName: tea.String(doomedSecret), RecoveryWindowInDays: tea.String("7")})
	if report("DeleteSecret", err, nil) {
		probe.Emit(probe.Line{Case: "DeleteSecret(planned)", Ok: true, Detail: map[string]interface{}{"plannedDeleteTime": tea.StringValue(deleted.Body.PlannedDeleteTime) != "", "secretName": tea.StringValue(deleted.Body.SecretName)}})
	}
	get(c, "secret in its recovery window", doomedSecret, "", "", "doomed", false)
	_, err = c.RestoreSecret(&kms.RestoreSecretRequest{SecretName: tea.String(doomedSecret)})
	report("RestoreSecret", err, nil)
	get(c, "GetSecretValue(after RestoreSecret)", doomedSecret, "", "", "doomed", false)
	_, err = c.DeleteSecret(&kms.DeleteSecretRequest{SecretName: tea.String(doomedSecret), ForceDeleteWithoutRecovery: tea.String("true")})
	report("DeleteSecret(force)", err, nil)

	get(c, "deleted secret", doomedSecret, "", "", "", false)
	get(c, "unknown secret", "no-such-secret", "", "", "", false)
	create(c, "existing secret", dbSecret, "v9", "again")
	get(ackClient(f.AccessKey, f.SecretKey+"-wrong", nil), "bad signature", dbSecret, "", "", "", false)
}

// secretsReader is what ack-secret-manager's access key does, and what it may not.
func secretsReader(f probe.Flags) {
	cfg = f
	c := ackClient(f.AccessKey, f.SecretKey, nil)
	get(c, "reader GetSecretValue", dbSecret, "", "", valueV2, false)
	describeSecret(c, "reader DescribeSecret", dbSecret)
	put(c, "reader PutSecretValue", dbSecret, "v3", "overwritten")
	list(c, "reader ListSecrets", 1, 10)
}

func secretsThrottled(f probe.Flags) {
	cfg = f
	c := ackClient(f.AccessKey, f.SecretKey, nil)
	get(c, "GetSecretValue 1", dbSecret, "", "", valueV2, false)
	get(c, "GetSecretValue 2", dbSecret, "", "", valueV2, false)
}
