// Package ticket is shake's shared vocabulary: campaign and ticket ids, amounts, key
// derivation, the shard file format, the manifest, the per-ticket MAC, the sealed user
// ticket token, session tokens and the claim record.
//
// It imports nothing else of shake's, so every role (generator, edge, verifier, settler)
// agrees on one definition of each format.
package ticket
