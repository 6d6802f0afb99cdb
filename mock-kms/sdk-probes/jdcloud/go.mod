module kms-lab.io/mock-kms/sdk-probes/jdcloud

go 1.26.0

require github.com/jdcloud-api/jdcloud-sdk-go v1.16.0

require github.com/gofrs/uuid v4.4.0+incompatible // indirect
