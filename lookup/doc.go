// Package lookup answers antespam-milter's two questions, "does this
// recipient exist?" and "is this client host malign?", from a stack of
// tiers, each a Source that wraps the next:
//
//	Checker → LRU → memcached → directory (LDAP or file)
//
// Concurrent lookups of one key that memcached lacks share one fill
// (Memcache uses a Coalesce for it); without memcached a Coalesce tier
// stands in front of the directory.
//
// The code is plain sequential Go: Lookup(ctx, key) is an ordinary call and
// concurrency comes from the callers' goroutines (one per milter session in
// the daemon, one per item in "antespam-milter check"). The package knows
// nothing of milters or SMTP replies.
//
// Promises:
//   - A miss is an answer (Answer.Found false, nil error); an error means
//     "don't know" and is never cached.
//   - Caches keep found and not-found answers with separate TTLs, and keep
//     the time the directory answered. Past its TTL, when the next tier
//     fails, a found answer up to stale_max old is served (Answer.Stale);
//     a not-found answer past its TTL is never served, so a directory
//     outage can never turn into a wrong "user unknown".
//   - Concurrent lookups of one key reach the directory once.
//   - Every hostile input is safe: LDAP filter values are escaped per
//     RFC 4515 and memcached keys are hashed when they hold bytes memcached
//     refuses or are too long.
package lookup
