// Command kms-go-plugin is kms-lab's Go peer: a KMS v2 plugin built on upstream's own server
// framework, k8s.io/kms/pkg/service (NewGRPCService, as upstream's mock plugin uses), with a
// simple AES-256-GCM KEK held in memory. `kms-lab conformance` must pass it.
//
// Usage: kms-go-plugin --socket /tmp/x.sock [--key-name go-peer]
// SIGHUP adds a new random KEK version (a rotation); old versions still decrypt.
// SIGTERM/SIGINT stop it gracefully and remove the socket.
package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/kms/pkg/service"
)

// versionAnnotation names the KEK version that wrapped a ciphertext.
const versionAnnotation = "version.go-peer.kms-lab.io"

// keyRing is an in-memory list of AES-256-GCM KEK versions; the last one encrypts.
type keyRing struct {
	name     string
	mu       sync.RWMutex
	versions []cipher.AEAD
}

func newAEAD() (cipher.AEAD, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (k *keyRing) rotate() error {
	aead, err := newAEAD()
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.versions = append(k.versions, aead)
	return nil
}

func (k *keyRing) keyID(version int) string {
	return fmt.Sprintf("%s/v%d", k.name, version)
}

func (k *keyRing) current() (int, cipher.AEAD) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.versions), k.versions[len(k.versions)-1]
}

// Encrypt seals data with the current version; the key id is the additional data.
func (k *keyRing) Encrypt(_ context.Context, uid string, data []byte) (*service.EncryptResponse, error) {
	version, aead := k.current()
	keyID := k.keyID(version)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, status.Errorf(codes.Internal, "cannot draw a nonce: %v", err)
	}
	ciphertext := aead.Seal(nonce, nonce, data, []byte(keyID))
	log.Printf("encrypt uid=%s key_id=%s plaintext_len=%d", uid, keyID, len(data))
	return &service.EncryptResponse{
		Ciphertext:  ciphertext,
		KeyID:       keyID,
		Annotations: map[string][]byte{versionAnnotation: []byte(strconv.Itoa(version))},
	}, nil
}

// Decrypt opens a ciphertext; the annotations must be exactly the ones Encrypt returned.
func (k *keyRing) Decrypt(_ context.Context, uid string, req *service.DecryptRequest) ([]byte, error) {
	if len(req.Annotations) != 1 {
		return nil, status.Errorf(codes.InvalidArgument, "expected exactly the annotation %s returned by Encrypt, got %d annotations", versionAnnotation, len(req.Annotations))
	}
	version, err := strconv.Atoi(string(req.Annotations[versionAnnotation]))
	k.mu.RLock()
	count := len(k.versions)
	var aead cipher.AEAD
	if err == nil && version >= 1 && version <= count {
		aead = k.versions[version-1]
	}
	k.mu.RUnlock()
	if aead == nil {
		return nil, status.Errorf(codes.NotFound, "annotation %s does not name a known KEK version", versionAnnotation)
	}
	keyID := k.keyID(version)
	if req.KeyID != "" && req.KeyID != keyID {
		return nil, status.Errorf(codes.InvalidArgument, "key_id %q does not match the KEK version named by the annotations", req.KeyID)
	}
	if len(req.Ciphertext) < aead.NonceSize()+aead.Overhead() {
		return nil, status.Errorf(codes.InvalidArgument, "ciphertext of %d bytes is shorter than nonce and tag", len(req.Ciphertext))
	}
	nonce, sealed := req.Ciphertext[:aead.NonceSize()], req.Ciphertext[aead.NonceSize():]
	plaintext, err := aead.Open(nil, nonce, sealed, []byte(keyID))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "ciphertext authentication failed")
	}
	log.Printf("decrypt uid=%s key_id=%s", uid, keyID)
	return plaintext, nil
}

// Status reports the current key id after a real round trip through the KEK.
func (k *keyRing) Status(ctx context.Context) (*service.StatusResponse, error) {
	probe := []byte("kms-lab go peer health probe")
	encrypted, err := k.Encrypt(ctx, "status", probe)
	healthz := "ok"
	if err == nil {
		var back []byte
		back, err = k.Decrypt(ctx, "status", &service.DecryptRequest{Ciphertext: encrypted.Ciphertext, KeyID: encrypted.KeyID, Annotations: encrypted.Annotations})
		if err == nil && !bytes.Equal(back, probe) {
			err = errors.New("round trip returned different bytes")
		}
	}
	if err != nil {
		healthz = "KEK round trip failed: " + err.Error()
	}
	version, _ := k.current()
	return &service.StatusResponse{Version: "v2", Healthz: healthz, KeyID: k.keyID(version)}, nil
}

func main() {
	socket := flag.String("socket", "", "Unix socket to listen on (required)")
	keyName := flag.String("key-name", "go-peer", "KEK name; key ids are NAME/vN")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "error: --socket PATH is required")
		os.Exit(2)
	}
	ring := &keyRing{name: *keyName}
	if err := ring.rotate(); err != nil {
		log.Fatalf("cannot create the KEK: %v", err)
	}
	path := strings.TrimPrefix(*socket, "unix://")
	// upstream's ListenAndServe refuses an existing path; a stale socket from a crash is ours to remove.
	if info, err := os.Stat(path); err == nil && info.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
	server := service.NewGRPCService(path, 3*time.Second, ring)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for sig := range signals {
			if sig == syscall.SIGHUP {
				if err := ring.rotate(); err != nil {
					log.Printf("SIGHUP: rotation failed: %v", err)
					continue
				}
				version, _ := ring.current()
				log.Printf("SIGHUP: rotated to %s", ring.keyID(version))
				continue
			}
			log.Printf("%v: finishing in-flight calls", sig)
			server.Shutdown()
			return
		}
	}()
	log.Printf("kms-go-plugin serving KMS v2 on %s", path)
	if err := server.ListenAndServe(); err != nil {
		log.Fatalf("serve: %v", err)
	}
	_ = os.Remove(path)
}
