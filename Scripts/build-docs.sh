#!/bin/sh
# Builds the DocC documentation of the library modules into .build/docs/<Module>.doccarchive,
# failing on any warning (a broken symbol link, a topic that names nothing). Uses the
# toolchain's own `swift package dump-symbol-graph` and `docc`: no plugin to resolve.
set -eu
cd "$(dirname "$0")/.."
modules="${*:-HVCore HVBoot HVKVM HVParavirt HVDevices HVMachine}"
mkdir -p .build/docs
swift package dump-symbol-graph --minimum-access-level public >/dev/null
graphs=$(swift build --show-bin-path)/../symbolgraph
docc=$(dirname "$(command -v swift)")/docc
for module in $modules; do
  only="$(mktemp -d)"
  cp "$graphs/$module".symbols.json "$only/"
  # Extensions of other modules' types live in Module@Other.symbols.json.
  for extra in "$graphs/$module"@*.symbols.json; do [ -e "$extra" ] && cp "$extra" "$only/"; done
  "$docc" convert "Sources/$module/$module.docc" --fallback-display-name "$module" --fallback-bundle-identifier "$module" \
    --additional-symbol-graph-dir "$only" --output-path ".build/docs/$module.doccarchive" --warnings-as-errors
  rm -rf "$only"
  echo "documentation: .build/docs/$module.doccarchive"
done
