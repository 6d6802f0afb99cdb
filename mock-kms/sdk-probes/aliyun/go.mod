module kms-lab.io/mock-kms/sdk-probes/aliyun

go 1.26.0

require github.com/aliyun/alibaba-cloud-sdk-go v1.61.18

require (
	github.com/jmespath/go-jmespath v0.0.0-20180206201540-c2b33e8439af // indirect
	github.com/json-iterator/go v1.1.5 // indirect
	github.com/modern-go/concurrent v0.0.0-20180306012644-bacd9c7ef1dd // indirect
	github.com/modern-go/reflect2 v0.0.0-20180701023420-4b7aa43c6742 // indirect
	gopkg.in/ini.v1 v1.42.0 // indirect
)
