// Command gcp-kms-emulator-rest is kms-lab's main for gcp-kms-emulator (Apache-2.0,
// github.com/blackwell-systems/gcp-kms-emulator): it serves the emulator's own REST gateway
// (internal/gateway) over its own storage (internal/storage), both used unmodified from
// ../shared/thirdparty/gcp-kms-emulator, which kms_lab_provision builds this against
// (a generated go.mod `replace`s the emulator's module by that folder).
//
// That copy lacks upstream's cmd/ and internal/server (its .gitignore line `server` dropped
// both), so this file supplies the one missing link: a gRPC KeyManagementService whose every
// method is one call of the emulator's storage, its answer and error returned as they are (the
// gateway turns every error into HTTP 500 or 404 itself). It adds no behaviour of its own except
// filling EncryptResponse.name, which this storage version does not return, with the primary
// version's name (the version storage.Encrypt uses). Prints one line when listening.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"

	kmspb "cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/blackwell-systems/gcp-kms-emulator/internal/gateway"
	"github.com/blackwell-systems/gcp-kms-emulator/internal/storage"
	"google.golang.org/grpc"
)

type service struct {
	kmspb.UnimplementedKeyManagementServiceServer
	s *storage.Storage
}

func (v *service) CreateKeyRing(_ context.Context, r *kmspb.CreateKeyRingRequest) (*kmspb.KeyRing, error) {
	return v.s.CreateKeyRing(r.Parent + "/keyRings/" + r.KeyRingId)
}

func (v *service) GetKeyRing(_ context.Context, r *kmspb.GetKeyRingRequest) (*kmspb.KeyRing, error) {
	return v.s.GetKeyRing(r.Name)
}

func (v *service) ListKeyRings(_ context.Context, r *kmspb.ListKeyRingsRequest) (*kmspb.ListKeyRingsResponse, error) {
	rings, err := v.s.ListKeyRings(r.Parent)
	return &kmspb.ListKeyRingsResponse{KeyRings: rings, TotalSize: int32(len(rings))}, err
}

func (v *service) CreateCryptoKey(_ context.Context, r *kmspb.CreateCryptoKeyRequest) (*kmspb.CryptoKey, error) {
	k := r.GetCryptoKey()
	return v.s.CreateCryptoKey(r.Parent, r.CryptoKeyId, k.GetPurpose(), k.GetVersionTemplate(), k.GetLabels())
}

func (v *service) GetCryptoKey(_ context.Context, r *kmspb.GetCryptoKeyRequest) (*kmspb.CryptoKey, error) {
	return v.s.GetCryptoKey(r.Name)
}

func (v *service) ListCryptoKeys(_ context.Context, r *kmspb.ListCryptoKeysRequest) (*kmspb.ListCryptoKeysResponse, error) {
	keys, err := v.s.ListCryptoKeys(r.Parent)
	return &kmspb.ListCryptoKeysResponse{CryptoKeys: keys, TotalSize: int32(len(keys))}, err
}

func (v *service) CreateCryptoKeyVersion(_ context.Context, r *kmspb.CreateCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	return v.s.CreateCryptoKeyVersion(r.Parent)
}

func (v *service) UpdateCryptoKeyPrimaryVersion(_ context.Context, r *kmspb.UpdateCryptoKeyPrimaryVersionRequest) (*kmspb.CryptoKey, error) {
	return v.s.UpdateCryptoKeyPrimaryVersion(r.Name, r.Name+"/cryptoKeyVersions/"+r.CryptoKeyVersionId)
}

func (v *service) GetCryptoKeyVersion(_ context.Context, r *kmspb.GetCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	return v.s.GetCryptoKeyVersion(r.Name)
}

func (v *service) ListCryptoKeyVersions(_ context.Context, r *kmspb.ListCryptoKeyVersionsRequest) (*kmspb.ListCryptoKeyVersionsResponse, error) {
	versions, err := v.s.ListCryptoKeyVersions(r.Parent)
	return &kmspb.ListCryptoKeyVersionsResponse{CryptoKeyVersions: versions, TotalSize: int32(len(versions))}, err
}

func (v *service) UpdateCryptoKeyVersion(_ context.Context, r *kmspb.UpdateCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	return v.s.UpdateCryptoKeyVersion(r.GetCryptoKeyVersion().GetName(), r.GetCryptoKeyVersion().GetState())
}

func (v *service) DestroyCryptoKeyVersion(_ context.Context, r *kmspb.DestroyCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	return v.s.DestroyCryptoKeyVersion(r.Name)
}

func (v *service) Encrypt(_ context.Context, r *kmspb.EncryptRequest) (*kmspb.EncryptResponse, error) {
	ciphertext, err := v.s.Encrypt(r.Name, r.Plaintext)
	if err != nil {
		return nil, err
	}
	out := &kmspb.EncryptResponse{Ciphertext: ciphertext}
	if key, err := v.s.GetCryptoKey(r.Name); err == nil && key.Primary != nil {
		out.Name = key.Primary.Name
	}
	return out, nil
}

func (v *service) Decrypt(_ context.Context, r *kmspb.DecryptRequest) (*kmspb.DecryptResponse, error) {
	plaintext, err := v.s.Decrypt(r.Name, r.Ciphertext)
	if err != nil {
		return nil, err
	}
	return &kmspb.DecryptResponse{Plaintext: plaintext}, nil
}

func main() {
	port := flag.Int("port", 8080, "loopback port of the REST API")
	flag.Parse()
	// The gRPC service on an ephemeral loopback port, for the gateway only.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatalf("listen for gRPC: %v", err)
	}
	server := grpc.NewServer()
	kmspb.RegisterKeyManagementServiceServer(server, &service{s: storage.NewStorage()})
	go func() { log.Fatal(server.Serve(lis)) }()
	addr := fmt.Sprintf("127.0.0.1:%d", *port)
	log.Printf("gcp-kms-emulator REST on http://%s", addr)
	log.Fatal(gateway.NewServer(lis.Addr().String()).Start(context.Background(), addr))
}
