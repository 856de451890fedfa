# sign_in BASE EMAIL NEXT JAR MAILDIR: signs in the way a browser does (the email form, the code
# from the mail the file transport wrote, the code form) and prints the session cookie as
# NAME=VALUE. Sourced by the benchmarks that measure signed-in requests; needs curl and die().
sign_in() {
    local base=$1 email=$2 next=$3 jar=$4 maildir=$5 csrf code status cookie
    csrf=$(curl -s -c "$jar" -b "$jar" "$base/_pagegate/login?next=$next" | grep -o 'name="csrf" value="[^"]*"' | head -1 | sed 's/.*value="//;s/"$//')
    [ -n "$csrf" ] || die "no CSRF token on the email form"
    curl -s -o /dev/null -c "$jar" -b "$jar" --data-urlencode "email=$email" --data-urlencode "next=$next" \
        --data-urlencode "csrf=$csrf" "$base/_pagegate/login"
    for _ in $(seq 100); do ls "$maildir"/*.eml >/dev/null 2>&1 && break; sleep 0.1; done
    code=$(grep -hoE '\b[0-9]{6}\b' "$maildir"/*.eml | head -1)
    [ -n "$code" ] || die "no code in the mail"
    status=$(curl -s -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" --data-urlencode "email=$email" \
        --data-urlencode "code=$code" --data-urlencode "next=$next" --data-urlencode "csrf=$csrf" "$base/_pagegate/verify")
    [ "$status" = 303 ] || die "sign-in failed with status $status"
    cookie=$(awk '$6 ~ /^pagegate-[0-9a-f]+$/ {print $6"="$7}' "$jar" | head -1)
    [ -n "$cookie" ] || die "no session cookie after sign-in"
    printf '%s\n' "$cookie"
}
