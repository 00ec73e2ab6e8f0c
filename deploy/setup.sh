#!/bin/sh
# One-shot setup of docker-compose.yml's topology, run before the replicas start: a master
# keyring on the first start, the schema, the simulator's first sample account, and the sample
# site's OIDC client. Each step is skipped when already done, so running it again is harmless.
set -eu

# Never overwrite a keyring: a new one could not open the secrets sealed under the old one.
if [ ! -f "$WXHUB_KEYRING_FILE" ]; then
  wxhub vault init
fi

# Once, here, rather than by two replicas starting at the same moment.
wxhub migrate

# The first sample account of `wxhub sim`, with the values the simulator holds for it
# (`GET /__sim/accounts/wx5a1e0d3c0ffee001`; demo credentials, valid only in the simulator).
appid=wx5a1e0d3c0ffee001
if ! wxhub account show "$appid" >/dev/null 2>&1; then
  printf '%s\n' 0d1e2a3d4b5e6e7f8a9b0c1d2e3f4a5b democoffee \
    abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG |
    wxhub account add "$appid" --name "Demo Coffee" --owner demo@wxhub.localhost
  wxhub account configure "$appid" --push-mode safe
fi

# The client secret is printed once: keep the whole output for the sample site.
if [ ! -s "$SITE_CLIENT_FILE" ]; then
  wxhub client create --appid "$appid" --name "Sample site" \
    --redirect-uri "$SITE_REDIRECT_URI" --mode follow-required >"$SITE_CLIENT_FILE.new"
  mv "$SITE_CLIENT_FILE.new" "$SITE_CLIENT_FILE"
fi
echo "setup done: account $appid, sample site client in $SITE_CLIENT_FILE"
