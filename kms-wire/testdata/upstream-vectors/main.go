// Command upstreamvectors writes test vectors for kms-wire: etcd values built by
// the real kube-apiserver encryption-at-rest code (k8s.io/apiserver v0.34.4).
//
// Every value goes through the upstream transformers (aescbc, aesgcm,
// secretbox, KMS v1 envelope, KMS v2 envelope in both DEK-source modes). They
// are wrapped in value.PrefixTransformer with the same prefixes that
// pkg/server/options/encryptionconfig/config.go uses, and the authenticated
// data is value.DefaultContext(etcdKey), as in the etcd3 store. Keys are fixed
// but nonces, KMS DEKs and KMS v2 seeds are random, so the output changes from
// run to run. Before printing, the program decrypts every value with a fresh
// upstream transformer (empty DEK caches, so the KMS Decrypt path runs) and
// panics on any mismatch.
//
// The toy KMS "encrypts" a DEK/seed by XORing every byte with 0x5a. Its KMS v2
// key ID is "vector-key-1" and it returns the annotation
// {"version.kms-lab.io": "1"}.
//
// Regenerate with:
//
//	cd kms-wire/testdata/upstream-vectors && go run . > vectors.json
package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apiserver/pkg/storage/value"
	aestransformer "k8s.io/apiserver/pkg/storage/value/encrypt/aes"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	"k8s.io/apiserver/pkg/storage/value/encrypt/secretbox"
	"k8s.io/klog/v2"
	kmsservice "k8s.io/kms/pkg/service"
)

const (
	kmsKeyID     = "vector-key-1"
	kmsV1Name    = "kms-lab-v1"
	kmsV2Name    = "kms-lab-v2"
	apiServerID  = "kms-lab-upstream-vectors"
	xorByte      = 0x5a
	annotationK  = "version.kms-lab.io"
	annotationV  = "1"
	generator    = "kms-wire/testdata/upstream-vectors (go run .)"
	apiserverMod = "k8s.io/apiserver v0.34.4"
)

type vector struct {
	Name            string `json:"name"`
	Provider        string `json:"provider"`
	KeyName         string `json:"key_name"`
	KeyHex          string `json:"key_hex"`
	EncryptedDEKHex string `json:"encrypted_dek_hex,omitempty"`
	KeyID           string `json:"key_id,omitempty"`
	EtcdKey         string `json:"etcd_key"`
	PlaintextHex    string `json:"plaintext_hex"`
	StoredHex       string `json:"stored_hex"`
}

type output struct {
	Generator       string   `json:"generator"`
	ApiserverModule string   `json:"apiserver_module"`
	Vectors         []vector `json:"vectors"`
}

func xor(b []byte) []byte {
	out := make([]byte, len(b))
	for i := range b {
		out[i] = b[i] ^ xorByte
	}
	return out
}

// toyKMS implements both the KMS v1 (envelope.Service) and the KMS v2
// (kmsservice.Service) envelope interfaces. It remembers the last plaintext
// DEK/seed it was asked to encrypt.
type toyKMS struct{ lastPlain, lastCipher []byte }

func (k *toyKMS) record(plain []byte) []byte {
	k.lastPlain, k.lastCipher = bytes.Clone(plain), xor(plain)
	return bytes.Clone(k.lastCipher)
}

func (k *toyKMS) last() (string, string) {
	return hex.EncodeToString(k.lastPlain), hex.EncodeToString(k.lastCipher)
}

type toyKMSv1 struct{ *toyKMS }

func (k toyKMSv1) Encrypt(plain []byte) ([]byte, error)  { return k.record(plain), nil }
func (k toyKMSv1) Decrypt(cipher []byte) ([]byte, error) { return xor(cipher), nil }

type toyKMSv2 struct{ *toyKMS }

func (k toyKMSv2) Encrypt(_ context.Context, _ string, plain []byte) (*kmsservice.EncryptResponse, error) {
	return &kmsservice.EncryptResponse{
		Ciphertext:  k.record(plain),
		KeyID:       kmsKeyID,
		Annotations: map[string][]byte{annotationK: []byte(annotationV)},
	}, nil
}

func (k toyKMSv2) Decrypt(_ context.Context, _ string, req *kmsservice.DecryptRequest) ([]byte, error) {
	if req.KeyID != kmsKeyID || string(req.Annotations[annotationK]) != annotationV {
		return nil, fmt.Errorf("toy kms: unexpected key id %q / annotations %v", req.KeyID, req.Annotations)
	}
	return xor(req.Ciphertext), nil
}

func (k toyKMSv2) Status(context.Context) (*kmsservice.StatusResponse, error) {
	return &kmsservice.StatusResponse{Version: kmsv2.KMSAPIVersionv2, Healthz: "ok", KeyID: kmsKeyID}, nil
}

// unionTransformers is a copy of the unexported type in encryptionconfig/config.go
// that KMS v1 uses as its base transformer: write with the first, read with any.
type unionTransformers []value.Transformer

func (u unionTransformers) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	var errs []error
	for i, t := range u {
		out, stale, err := t.TransformFromStorage(ctx, data, dataCtx)
		if err == nil {
			return out, stale || i != 0, nil
		}
		errs = append(errs, err)
	}
	return nil, false, fmt.Errorf("unionTransformers: %v", errs)
}

func (u unionTransformers) TransformToStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, error) {
	return u[0].TransformToStorage(ctx, data, dataCtx)
}

// providerList mirrors encryptionconfig: the per-resource list of providers.
func providerList(prefix string, t value.Transformer) value.Transformer {
	return value.NewPrefixTransformers(fmt.Errorf("no matching prefix found"),
		value.PrefixTransformer{Prefix: []byte(prefix), Transformer: t})
}

// keyed mirrors aesPrefixTransformer / secretboxPrefixTransformer: a provider
// prefix wrapping a list of named keys (here just one).
func keyed(providerPrefix, keyName, noKeyErr string, t value.Transformer) value.Transformer {
	keys := value.NewPrefixTransformers(fmt.Errorf("%s", noKeyErr),
		value.PrefixTransformer{Prefix: []byte(keyName + ":"), Transformer: t})
	return providerList(providerPrefix, keys)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func seqKey(n int) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

func plaintexts() [][]byte {
	long := []byte("k8s\x00")
	for i := 0; len(long) < 300; i++ {
		long = append(long, byte(i*7+13))
	}
	return [][]byte{{}, long}
}

var counters = map[string]int{} // per-provider etcd key numbering

// run encrypts both plaintexts with one transformer from build, checks that a
// second, freshly built one (empty DEK caches) decrypts them, and returns the
// vectors. keyHex is called after each write and returns the key (for KMS: the
// DEK/seed the toy KMS just saw) and, for KMS, the encrypted DEK/seed.
func run(provider, keyName, label string, build func() value.Transformer, keyHex func() (string, string), keyID string) []vector {
	ctx := context.Background()
	writer, reader := build(), build()
	var out []vector
	for i, pt := range plaintexts() {
		etcdKey := fmt.Sprintf("/registry/secrets/default/vector-%s-%d", provider, counters[provider])
		counters[provider]++
		dataCtx := value.DefaultContext(etcdKey)
		stored := must(writer.TransformToStorage(ctx, pt, dataCtx))
		got, stale, err := reader.TransformFromStorage(ctx, stored, dataCtx)
		if err != nil || stale || !bytes.Equal(got, pt) {
			panic(fmt.Sprintf("%s: round trip failed: err=%v stale=%v got=%x", etcdKey, err, stale, got))
		}
		if _, _, err := reader.TransformFromStorage(ctx, stored, value.DefaultContext(etcdKey+"x")); err == nil &&
			provider != "aescbc" && provider != "secretbox" {
			panic(etcdKey + ": decrypted with the wrong authenticated data")
		}
		k, dek := keyHex()
		name := provider + "-" + label + []string{"empty", "300b"}[i]
		out = append(out, vector{Name: name, Provider: provider, KeyName: keyName, KeyHex: k,
			EncryptedDEKHex: dek, KeyID: keyID, EtcdKey: etcdKey,
			PlaintextHex: hex.EncodeToString(pt), StoredHex: hex.EncodeToString(stored)})
	}
	return out
}

func main() {
	// The wrong-AAD checks in run make upstream log "failed to decrypt data"; keep stderr quiet.
	klog.SetLogger(logr.Discard())
	var vectors []vector

	// aescbc and aesgcm with 32- and 16-byte keys (config.go: aesPrefixTransformer).
	aesModes := []struct {
		provider string
		newT     func(cipher.Block) (value.Transformer, error)
	}{
		{"aescbc", func(b cipher.Block) (value.Transformer, error) { return aestransformer.NewCBCTransformer(b), nil }},
		{"aesgcm", aestransformer.NewGCMTransformer},
	}
	for _, m := range aesModes {
		for _, size := range []int{32, 16} {
			key, keyName := seqKey(size), fmt.Sprintf("key%d", size)
			build := func() value.Transformer {
				return keyed("k8s:enc:"+m.provider+":v1:", keyName, "no matching key was found for the provided AES transformer",
					must(m.newT(must(aes.NewCipher(key)))))
			}
			fixed := func() (string, string) { return hex.EncodeToString(key), "" }
			vectors = append(vectors, run(m.provider, keyName, keyName+"-", build, fixed, "")...)
		}
	}

	// secretbox (config.go: secretboxPrefixTransformer).
	{
		var key [32]byte
		copy(key[:], seqKey(32))
		sb := func() value.Transformer {
			return keyed("k8s:enc:secretbox:v1:", "key32", "no matching key was found for the provided Secretbox transformer",
				secretbox.NewSecretboxTransformer(key))
		}
		fixed := func() (string, string) { return hex.EncodeToString(key[:]), "" }
		vectors = append(vectors, run("secretbox", "key32", "key32-", sb, fixed, "")...)
	}

	// KMS v1 (config.go: envelopePrefixTransformer). One Encrypt call, i.e. one fresh DEK, per write.
	{
		kms := toyKMSv1{&toyKMS{}}
		base := func(block cipher.Block) (value.Transformer, error) {
			gcm, err := aestransformer.NewGCMTransformer(block)
			return unionTransformers{gcm, aestransformer.NewCBCTransformer(block)}, err
		}
		v1 := func() value.Transformer {
			return providerList("k8s:enc:kms:v1:"+kmsV1Name+":", envelope.NewEnvelopeTransformer(kms, 1000, base))
		}
		vectors = append(vectors, run("kms-v1", kmsV1Name, "", v1, kms.last, "")...)
	}

	// KMS v2 in both DEK-source modes. The state is built with the same
	// kmsv2.GenerateTransformer call as config.go rotateDEKOnKeyIDChange, once per
	// transformer, so both values of a mode share one DEK/seed.
	for _, mode := range []struct {
		provider string
		useSeed  bool
	}{{"kms-v2-aes-gcm-key", false}, {"kms-v2-hkdf-seed", true}} {
		kms := toyKMSv2{&toyKMS{}}
		transformer, encObj, cacheKey, err := kmsv2.GenerateTransformer(context.Background(), "vector-uid", kms, mode.useSeed)
		if err != nil {
			panic(err)
		}
		state := kmsv2.State{
			Transformer:                           transformer,
			EncryptedObjectKeyID:                  encObj.KeyID,
			EncryptedObjectEncryptedDEKSource:     encObj.EncryptedDEKSource,
			EncryptedObjectAnnotations:            encObj.Annotations,
			EncryptedObjectEncryptedDEKSourceType: encObj.EncryptedDEKSourceType,
			UID:                                   "vector-uid",
			ExpirationTimestamp:                   time.Now().Add(time.Hour),
			CacheKey:                              cacheKey,
		}
		stateFunc := func() (kmsv2.State, error) { return state, nil }
		v2 := func() value.Transformer {
			return providerList("k8s:enc:kms:v2:"+kmsV2Name+":", kmsv2.NewEnvelopeTransformer(kms, kmsV2Name, stateFunc, apiServerID))
		}
		vectors = append(vectors, run(mode.provider, kmsV2Name, "", v2, kms.last, kmsKeyID)...)
	}

	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(output{Generator: generator, ApiserverModule: apiserverMod, Vectors: vectors}); err != nil {
		panic(err)
	}
}
