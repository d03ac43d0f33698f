//go:build race

package tracker

// raceEnabled skips the large simulated clusters: the race detector makes
// each member ~10x slower, and a starved member looks failed to the others.
const raceEnabled = true
