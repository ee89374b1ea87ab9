// Command directus-relay mirrors Directus collections into NATS JetStream
// KV buckets for a fleet of replicas (package relay). Run two or three of
// them against the same Directus and NATS: one leads and writes, the
// others stand by with warm replicas and take over within about the lease
// TTL.
//
//	directus-relay -url http://directus:8055 -token $TOKEN -nats nats://nats:4222 -collections posts,tags
//
// Every flag can be given in the environment instead: DIRECTUS_URL,
// DIRECTUS_TOKEN, NATS_URL, RELAY_COLLECTIONS, RELAY_ID, RELAY_LEASE_TTL,
// RELAY_REPLICAS, RELAY_RECONCILE, RELAY_LOG_LEVEL. A collection is
// name[:keyfield[:bucket]] (keyfield "id", bucket "directus_<name>" by
// default); the relay mirrors every row of it. SIGINT or SIGTERM stops it
// cleanly: it resigns the lease, so a standby takes over at once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/relay"
)

type config struct {
	url, token, natsURL, collections, id, logLevel string
	leaseTTL, reconcile                            time.Duration
	replicas                                       int
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("directus-relay", flag.ContinueOnError)
	fs.StringVar(&c.url, "url", env("DIRECTUS_URL", ""), "Directus base URL")
	fs.StringVar(&c.token, "token", env("DIRECTUS_TOKEN", ""), "static token of a Directus user that reads the collections")
	fs.StringVar(&c.natsURL, "nats", env("NATS_URL", nats.DefaultURL), "NATS URL (JetStream enabled)")
	fs.StringVar(&c.collections, "collections", env("RELAY_COLLECTIONS", ""), "comma-separated name[:keyfield[:bucket]]")
	fs.StringVar(&c.id, "id", env("RELAY_ID", ""), "this relay's identity (default hostname-pid-random)")
	fs.DurationVar(&c.leaseTTL, "lease-ttl", envDuration("RELAY_LEASE_TTL", relay.DefaultLeaseTTL), "leader lease TTL")
	fs.DurationVar(&c.reconcile, "reconcile", envDuration("RELAY_RECONCILE", 10*time.Minute), "re-read each collection from Directus this often (0: never)")
	fs.IntVar(&c.replicas, "replicas", envInt("RELAY_REPLICAS", 1), "replication of the buckets (3 on a clustered JetStream)")
	fs.StringVar(&c.logLevel, "log-level", env("RELAY_LOG_LEVEL", "info"), "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.url == "" || c.collections == "" {
		return c, errors.New("-url and -collections are required")
	}
	return c, nil
}

func parseCollections(s string) ([]relay.Collection, error) {
	var out []relay.Collection
	for _, spec := range strings.Split(s, ",") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		parts := strings.Split(spec, ":")
		if len(parts) > 3 || parts[0] == "" {
			return nil, fmt.Errorf("collection %q: want name[:keyfield[:bucket]]", spec)
		}
		c := relay.Collection{Name: parts[0]}
		if len(parts) > 1 {
			c.KeyField = parts[1]
		}
		if len(parts) > 2 {
			c.Bucket = parts[2]
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no collection")
	}
	return out, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "directus-relay:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil && !errors.Is(err, context.Canceled) {
		slog.Error("directus-relay", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cols, err := parseCollections(cfg.collections)
	if err != nil {
		return err
	}
	m, err := manager.New(&conn.Config{URL: cfg.url, Auth: conn.Auth{Token: cfg.token}, Logger: log}, nil)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Connect(ctx); err != nil {
		return fmt.Errorf("connect to Directus: %w", err)
	}
	nc, err := nats.Connect(cfg.natsURL, nats.MaxReconnects(-1), nats.Name("directus-relay"))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	r, err := relay.New(m, js, cols, &relay.Options{
		ID: cfg.id, LeaseTTL: cfg.leaseTTL, Replicas: cfg.replicas, ReconcileInterval: cfg.reconcile,
		CompactInterval: time.Hour, Logger: log,
		OnLeader: func(on bool) { log.Info("leadership", "leading", on) },
	})
	if err != nil {
		return err
	}
	return r.Run(ctx)
}
