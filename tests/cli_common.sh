# cli_common.sh: what the shell tests share (sourced by test_cli.sh, test_interop_cli.sh, test_oracle.sh):
# a scratch directory removed on exit, the pass/fail counters and the three expectations. Output of the
# command under test goes to $work/out and $work/err.
work=$(mktemp -d) && [ -d "$work" ] || { echo "error: mktemp -d failed: no scratch directory for the tests" >&2; exit 1; }
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }

# expect_ok DESCRIPTION COMMAND...: exit status 0, and no sanitizer's report
expect_ok() {
    description=$1; shift
    "$@" > "$work/out" 2> "$work/err"
    ok_status=$?
    if [ "$ok_status" -ne 0 ]; then fail "$description (exit $ok_status): $(cat "$work/err")"
    elif sanitizer_report "$work/err"; then fail "$description: a sanitizer's report: $(cat "$work/err")"
    else pass; fi
}

# A sanitizer's report (a sanitized build under test: test-cli-asan) fails the check whatever the exit status:
# an error path that prints its message and then leaks, or reads freed memory, must not pass as the error
sanitizer_report() { grep -q -E "(Address|Leak|Thread|UndefinedBehavior)Sanitizer|runtime error:" "$1"; }

# expect_error DESCRIPTION PATTERN COMMAND...: exit status exactly 1 (not a signal) and PATTERN in stderr
expect_error() {
    description=$1; pattern=$2; shift 2
    "$@" > "$work/out" 2> "$work/err"
    status=$?
    if sanitizer_report "$work/err"; then fail "$description: a sanitizer's report: $(cat "$work/err")"; return; fi
    if [ "$status" -ne 1 ]; then fail "$description: exit status $status, expected 1: $(cat "$work/err")"; return; fi
    if grep -q -- "$pattern" "$work/err"; then pass; else fail "$description: stderr lacks '$pattern': $(cat "$work/err")"; fi
}

# expect_status DESCRIPTION STATUS COMMAND...: the exit status, stdout and stderr together in $work/out (its
# last 30 lines shown on failure)
expect_status() {
    description=$1; want=$2; shift 2
    "$@" > "$work/out" 2>&1
    status=$?
    if sanitizer_report "$work/out"; then fail "$description: a sanitizer's report"; tail -30 "$work/out" >&2; return; fi
    if [ "$status" -eq "$want" ]; then pass; else fail "$description: exit status $status, expected $want"; tail -30 "$work/out" >&2; fi
}
