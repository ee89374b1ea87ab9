// Package directustest provides an in-process Directus realtime server for tests.
package directustest
