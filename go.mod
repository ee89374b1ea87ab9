module github.com/e41af43e/directus-realtime

go 1.26.0

require (
	github.com/coder/websocket v1.8.15 // indirect
	github.com/puzpuzpuz/xsync/v3 v3.5.1 // indirect
	golang.org/x/sync v0.24.0 // indirect
)
