#!/usr/bin/env bash
# The panel's browser tests drive Debian's Chromium (/usr/bin/chromium) with Playwright; nothing
# is downloaded by Playwright itself. Install it when missing and we are root with apt; otherwise
# say so and carry on: those tests then skip with the same reason.
set -uo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the browser tests (apt-get)..." >&2
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
      >/tmp/tollgate-chromium-install.log 2>&1; then
    exit 0
  fi
  echo "chromium could not be installed (see /tmp/tollgate-chromium-install.log):" \
    "the browser tests will be skipped" >&2
else
  echo "no /usr/bin/chromium (as root: apt-get install chromium): the browser tests will be skipped" >&2
fi
exit 0
