// Package tracker owns the memberlist cluster: node metadata and roles,
// seeder announcements and lookups. It is the decentralized tracker: there
// is no central tracker process.
package tracker
