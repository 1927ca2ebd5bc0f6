#!/usr/bin/env bash
# Shared by the benchmarks (sourced): a directory subtree of the run's own, with the
# containers Roster writes under. Needs .dev/env sourced.

# bench_subtree OU_DN NAME: creates OU_DN (ou=NAME) and its people, groups, tombstones and
# counters containers.
bench_subtree() {
    local ou=$1 name=$2 c
    {
        printf 'dn: %s\nobjectClass: organizationalUnit\nou: %s\n' "$ou" "$name"
        for c in people groups tombstones counters; do
            printf '\ndn: ou=%s,%s\nobjectClass: organizationalUnit\nou: %s\n' "$c" "$ou" "$c"
        done
    } | ldapadd -x -H "$LDAP_URI" -D "$LDAP_BIND_DN" -y "$LDAP_BIND_PASSWORD_FILE" >/dev/null
}
