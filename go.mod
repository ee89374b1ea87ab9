module github.com/e41af43e/directus-realtime

go 1.26.0

require (
	github.com/coder/websocket v1.8.15
	go.uber.org/goleak v1.3.0
	golang.org/x/sync v0.24.0
)

require golang.org/x/time v0.16.0
