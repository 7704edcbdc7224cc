#!/usr/bin/env bash
# Installs the Debian packages that the tests and the demo need, when they are missing.
#
# Idempotent and quick: when every command is already there it prints nothing and
# touches nothing. Otherwise it runs `apt-get update` once, installs what is missing
# and prints one line naming it. Needs root, or sudo.
set -euo pipefail

# command:package. A command, not the package database, is checked because the
# command is what the tests call, whoever put it there.
REQUIRED=(
    "systemd-analyze:systemd"  # tests/project/test_systemd_unit.py verifies and scores the unit
    "unshare:util-linux"       # ...inside a private mount namespace
    "gcc:gcc"                  # C extensions built from source
    "shellcheck:shellcheck"    # tests/package lints the .deb's maintainer scripts
    "make:make"
    "mosquitto:mosquitto"      # MQTT broker the tests and the demo start themselves
    "clang:clang"              # firmware-bridge/c: `make fuzz` builds its libFuzzer target
    # An entry whose first part holds a '/' is a file (a glob), not a command.
    "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a:libclang-rt-14-dev"  # libFuzzer
    # ...the unit's system call filter, applied to a camera worker (tests/helpers/seccomp.py)
    "/usr/lib/*/libseccomp.so.2:libseccomp2"
    # A Modbus device we did not write, built by the tests (tests/helpers/libmodbus_device.py)
    "pkg-config:pkgconf"
    "/usr/include/modbus/modbus.h:libmodbus-dev"
    # firmware-bridge/c: `make mcu` (in `make firmware` and `make bench`) cross-builds the
    # library for Cortex-M0+/M4 against newlib-nano
    "arm-none-eabi-gcc:gcc-arm-none-eabi"
    "/usr/lib/arm-none-eabi/newlib/nano.specs:libnewlib-arm-none-eabi"
    # tests/package: the .deb is installed into a Debian root made with debootstrap
    "debootstrap:debootstrap"
    "dpkg-deb:dpkg"
)

have() {
    if [[ "$1" == */* ]]; then
        compgen -G "$1" >/dev/null
        return
    fi
    command -v "$1" >/dev/null 2>&1 && return 0
    # Daemons such as mosquitto live in sbin, which a normal user's PATH may lack.
    local dir
    for dir in /usr/local/sbin /usr/sbin /sbin; do
        [[ -x "$dir/$1" ]] && return 0
    done
    return 1
}

missing=()
for entry in "${REQUIRED[@]}"; do
    have "${entry%%:*}" || missing+=("${entry#*:}")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi

fail() {
    echo "setup-system: $*" >&2
    exit 1
}

if ! command -v apt-get >/dev/null 2>&1; then
    fail "missing packages: ${missing[*]}; this script only knows apt-get (Debian/Ubuntu), install them by hand"
fi
if ((EUID == 0)); then
    as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
    as_root() { sudo "$@"; }
else
    fail "missing packages: ${missing[*]}; run as root (or install sudo): apt-get install ${missing[*]}"
fi

log=$(mktemp)
policy=/usr/sbin/policy-rc.d
own_policy=0
cleanup() {
    if ((own_policy)); then
        as_root rm -f "$policy"
    fi
    rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Installing a daemon package starts its service (mosquitto on port 1883); the tests
# start their own broker instead. A policy-rc.d that answers 101 ("action forbidden")
# stops invoke-rc.d and deb-systemd-invoke from starting anything during the install.
# An existing policy is the administrator's: leave it alone.
if [[ ! -e "$policy" ]]; then
    own_policy=1
    printf '#!/bin/sh\n# Temporary, from smartpole scripts/setup-system.sh: start no service.\nexit 101\n' \
        | as_root tee "$policy" >/dev/null
    as_root chmod 0755 "$policy"
fi

if ! {
    as_root apt-get update \
        && as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${missing[@]}"
} >"$log" 2>&1; then
    cat "$log" >&2
    fail "could not install: ${missing[*]}"
fi

for pkg in "${missing[@]}"; do
    if [[ "$pkg" == mosquitto ]]; then
        # The package also enables its service for the next boot; undo that too.
        if command -v deb-systemd-helper >/dev/null 2>&1; then
            as_root deb-systemd-helper disable mosquitto.service >>"$log" 2>&1 || true
        fi
        if [[ -x /usr/sbin/update-rc.d ]]; then
            as_root /usr/sbin/update-rc.d mosquitto disable >>"$log" 2>&1 || true
        fi
    fi
done

echo "setup-system: installed ${missing[*]}"
