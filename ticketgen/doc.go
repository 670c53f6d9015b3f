// Package ticketgen is shake's offline generator: it splits a campaign's budget into
// precomputed, MAC'd tickets, writes one shard file and one shard key per edge, and the
// manifest that describes them all.
//
// # The split
//
// Generate first plans, then draws. The plan is exact integer arithmetic:
//
//   - Tickets per shard: Count is apportioned by Weights (all 1 when none are given)
//     with the largest-remainder method (ties to the lower shard index); a shard whose
//     share rounds to zero takes one ticket from the largest shard. So Edges <= Count is
//     required and no shard is empty.
//
//   - Budget per shard: proportional to the shard's ticket count (largest remainder), so
//     every shard has the campaign's mean amount and its budget is feasible: a shard with
//     n tickets gets between n*Min and n*Max.
//
//   - Rounds: each shard's tickets are split into equal counts per round (the first rounds
//     take the remainder), each round range a contiguous id range, and its budget is again
//     proportional to its count. A round can be empty when a shard has fewer tickets than
//     there are rounds. Without rounds there is one always-open round (index 0).
//
//   - Prizes (Config.Prizes): each prize's tickets are apportioned to shards by their
//     ticket counts, then to each shard's rounds by their counts, a shard's leftover units
//     going to the rounds furthest behind their campaign-wide share (allocatePrizes), so
//     no shard or round gets more than its share plus one. The lucky budget (Budget minus
//     the prizes' money) is apportioned to shards and rounds by their lucky tickets.
//
// Then each segment (one round of one shard: k lucky tickets, lucky budget R, and its
// prize tickets) is drawn. The lucky amounts use the WeChat-style "double mean" method:
// each is uniform on the integers [lo, hi] with
//
//	lo = max(Min, R - (k-1)*Max)
//	hi = min(Max, R - (k-1)*Min, floor(2*R/k))
//
// where R and k are what remains of the segment before the draw. The expected amount is
// close to the remaining mean R/k, a lucky ticket gets up to twice the mean, and the
// clamps keep the rest feasible so the last ticket takes exactly what is left: the
// amounts sum to the segment budget exactly and every amount lies in [Min, Max].
//
// # Fairness
//
// A sequential draw is fair in expectation but not in distribution: late positions get
// the largest amount more often, and under a cap below twice the mean the early ones get
// less on average. Edges hand tickets out in id order, so a position is when a shaker
// shook. So the segment's amounts (lucky and prizes) are shuffled (Fisher-Yates with the
// shard's generator) before they are given ids: every position of a round then has the
// same distribution. Memory: a segment is drawn and shuffled in chunks of at most
// maxChunk (2^22) tickets, 4 bytes each, so a worker holds at most 16 MiB of amounts; a
// larger segment is split into near-equal chunks, each with its proportional share of the
// segment's prizes and lucky budget, and each shuffled on its own.
//
// # Reproducibility and parallelism
//
// Shards are generated in parallel on GOMAXPROCS workers. Each shard draws from its own
// PCG (math/rand/v2) seeded with SHA-256 of the 32-byte seed and the shard index, so the
// amounts depend only on the manifest's parameters and the seed, not on the number of
// workers or their timing. The seed is written to OutDir/seed and only its SHA-256 to
// the manifest (seed_sha256): a commitment the reveal (Reveal) checks afterwards.
//
// # Output
//
// OutDir/edge-NNN.tickets (ticket.ShardWriter format), OutDir/edge-NNN.key (the shard's
// 32-byte AEAD key, mode 0600), OutDir/seed (mode 0600) and OutDir/manifest.json. Everything is written under a
// temporary directory inside OutDir and renamed into place only when every shard is
// complete and the manifest validates; on any error the temporary files are removed and
// OutDir is left as it was. The manifest is written last, so its presence means the
// output is complete. Memory stays bounded whatever Count is: each worker holds one
// chunk of amounts (at most 16 MiB), one block of records (ticket.BlockRecords) and its
// compressor.
package ticketgen
