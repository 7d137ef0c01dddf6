#!/bin/sh
# Every public declaration of the library modules has a doc comment: swift-format's
# AllPublicDeclarationsHaveDocumentation, with every other rule off (.swift-format-docs.json).
# CI runs it (make lint); `make docs` then checks that the comments' symbol links resolve.
set -eu
cd "$(dirname "$0")/.."
modules="Sources/HVCore Sources/HVBoot Sources/HVKVM Sources/HVParavirt Sources/HVDevices Sources/HVMachine Sources/HVDevicesTesting"
missing=$(swift-format lint --configuration .swift-format-docs.json -r $modules 2>&1 | grep AllPublicDeclarationsHaveDocumentation || true)
if [ -n "$missing" ]; then
  echo "$missing"
  echo "documentation lint: the public declarations above need a doc comment" >&2
  exit 1
fi
echo "documentation lint: every public declaration of $(echo $modules | wc -w) library modules is documented"
