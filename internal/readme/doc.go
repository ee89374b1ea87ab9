// Package readme holds no code, only a test that keeps the README's Go
// program compiling: the test builds the first ```go block of README.md,
// exactly as written, as a main package of this module.
package readme
