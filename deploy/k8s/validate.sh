#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests in deploy/k8s (no cluster, no GitHub):
#   1. builds kustomize and kubeconform from the Go module proxy into the cache (once);
#   2. prepares strict JSON schemas in the cache (once): core kinds from the Kubernetes OpenAPI spec in
#      the k8s.io/kubernetes module zip, KEDA's CRDs from the kedacore/keda module zip, Strimzi's CRDs
#      generated from io.strimzi:api on Maven Central with Strimzi's own CrdGenerator (needs Java 21+);
#   3. runs `kustomize build` on base and every overlay and checks every resource with
#      `kubeconform -strict -summary` against those schemas only. Any invalid resource, or any
#      resource without a schema, fails the run.
#
# usage: bash deploy/k8s/validate.sh [--render-dir DIR]   (DIR keeps <target>.yaml and <target>.json)
#        bash deploy/k8s/validate.sh --files FILE...      (check these manifests instead, same schemas)
# exit:  0 all valid, 1 invalid resources or a failed step, 2 usage, 3 a prerequisite is missing
#        (go, python3, java 21+, mvn, curl).
#
# Environment (defaults in brackets): K8S_TOOLS_CACHE [deploy/.cache/k8s-tools], KUSTOMIZE_VERSION
# [v5.8.2], KUBECONFORM_VERSION [v0.8.0], K8S_VERSION [v1.34.1], KEDA_VERSION [v2.21.1],
# STRIMZI_VERSION [1.2.0], GO_BUILD_P [2] (go build -p: packages compiled at once), MVN [mvn],
# STRIMZI_JAVA [first Java 21+ found: $JAVA_HOME, PATH, /usr/lib/jvm/*], GOPROXY [go env GOPROXY].
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${K8S_TOOLS_CACHE:-$HERE/../.cache/k8s-tools}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.8.0}"
K8S_VERSION="${K8S_VERSION:-v1.34.1}"
KEDA_VERSION="${KEDA_VERSION:-v2.21.1}"
STRIMZI_VERSION="${STRIMZI_VERSION:-1.2.0}"
GO_BUILD_P="${GO_BUILD_P:-2}"
MVN="${MVN:-mvn}"
TARGETS=(base overlays/dev overlays/production overlays/object-store)

# go.sum hashes of the module zips, checked after download (as `go mod download` reported them,
# verified against sum.golang.org). Other versions are checked against a sum.golang.org lookup.
declare -A PINNED_H1=(
  ["k8s.io/kubernetes@v1.34.1"]="h1:F3p8dtpv+i8zQoebZeK5zBqM1g9x1aIdnA5vthvcuUk="
  ["github.com/kedacore/keda/v2@v2.21.1"]="h1:AoPpnkEeuSYUb1dAqQO5Pud9BpCPiOqurnKtnKobl6Q="
)

say() { printf 'validate.sh: %s\n' "$*"; }
die() { printf 'validate.sh: error: %s\n' "$*" >&2; exit 1; }
missing() { printf 'validate.sh: missing prerequisite: %s\n' "$*" >&2; exit 3; }
now() { date +%s; }

RENDER_DIR=""
FILES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --render-dir) [ $# -ge 2 ] || { echo "usage: $0 [--render-dir DIR] | --files FILE..." >&2; exit 2; }; RENDER_DIR="$2"; shift 2 ;;
    --files) shift; [ $# -gt 0 ] || { echo "usage: $0 --files FILE..." >&2; exit 2; }; FILES=("$@"); break ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--render-dir DIR] | --files FILE..." >&2; exit 2 ;;
  esac
done

# --- prerequisites ------------------------------------------------------------------------------
command -v go >/dev/null 2>&1 || missing "go (https://go.dev/dl) builds kustomize and kubeconform"
command -v curl >/dev/null 2>&1 || missing "curl downloads the module zips"
command -v python3 >/dev/null 2>&1 || missing "python3 converts the OpenAPI and CRD schemas"
mkdir -p "$CACHE/bin" "$CACHE/downloads" "$CACHE/schemas"
CACHE="$(cd "$CACHE" && pwd)"
SCHEMAS="$CACHE/schemas"
if command -v flock >/dev/null 2>&1; then exec 9>"$CACHE/.lock"; flock 9; fi

java_major() { "$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p' | head -1; }
find_java21() {
  local j m
  for j in ${STRIMZI_JAVA:-} ${JAVA_HOME:+$JAVA_HOME/bin/java} "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
    [ -n "$j" ] && [ -x "$j" ] || continue
    m="$(java_major "$j")"
    if [ -n "$m" ] && [ "$m" -ge 21 ]; then echo "$j"; return 0; fi
  done
  return 1
}

# --- Python with PyYAML -------------------------------------------------------------------------
PY=python3
if ! python3 -c 'import yaml' 2>/dev/null; then
  if [ ! -x "$CACHE/py/bin/python" ] || ! "$CACHE/py/bin/python" -c 'import yaml' 2>/dev/null; then
    say "PyYAML: not importable by python3; installing PyYAML 6.0.3 from PyPI into $CACHE/py"
    python3 -m venv "$CACHE/py" >/dev/null 2>&1 || missing "python3 -m venv (Debian: apt-get install python3-venv)"
    "$CACHE/py/bin/python" -m pip install -q --disable-pip-version-check 'PyYAML==6.0.3' || die "pip install PyYAML failed"
  fi
  PY="$CACHE/py/bin/python"
fi
CONVERTER_SUM="$(sha256sum "$HERE/schemas.py" | cut -c1-16)"

# --- 1. tools -------------------------------------------------------------------------------------
build_tool() { # name module version
  local name="$1" module="$2" version="$3" bin="$CACHE/bin/$1-$3" tmp t0
  if [ -x "$bin" ]; then say "$name $version: cached ($bin)"; return; fi
  say "$name $version: building with go install $module@$version (first run only; minutes on 2 cores)"
  t0="$(now)"
  tmp="$(mktemp -d "$CACHE/bin/.build.XXXXXX")"
  if ! (cd "$tmp" && GOWORK=off GOBIN="$tmp" nice -n 10 go install -trimpath -p "$GO_BUILD_P" "$module@$version"); then
    rm -rf "$tmp"; die "go install $module@$version failed (the Go proxy must be reachable; a newer Go may be needed)"
  fi
  mv "$tmp/$name" "$bin" && rm -rf "$tmp"
  say "$name $version: built in $(( $(now) - t0 )) s"
}
build_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
build_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
KUSTOMIZE="$CACHE/bin/kustomize-$KUSTOMIZE_VERSION"
KUBECONFORM="$CACHE/bin/kubeconform-$KUBECONFORM_VERSION"

# --- 2. schemas -----------------------------------------------------------------------------------
goproxy() {
  local p
  for p in $(go env GOPROXY | tr ',|' '  '); do
    case "$p" in direct|off) ;; *) echo "${p%/}"; return ;; esac
  done
  echo "https://proxy.golang.org"
}
# a module zip from the Go proxy, checked against its go.sum hash
fetch_module() { # module version -> path of the zip
  local module="$1" version="$2" file want got url esc
  file="$CACHE/downloads/$(echo "$module" | tr '/' '_')@$version.zip"
  if [ -f "$file" ] && [ -f "$file.ok" ]; then echo "$file"; return; fi
  esc="$(echo "$module" | sed -E 's/([A-Z])/!\L\1/g')"
  url="$(goproxy)/$esc/@v/$version.zip"
  say "downloading $url" >&2
  curl -fsSL --retry 2 -o "$file.tmp" "$url" || die "could not download $url"
  want="${PINNED_H1[$module@$version]:-}"
  if [ -z "$want" ]; then
    want="$(curl -fsSL "https://sum.golang.org/lookup/$esc@$version" | awk -v m="$module" -v v="$version" '$1 == m && $2 == v { print $3 }')" \
      || die "could not look up $module@$version on sum.golang.org"
  fi
  got="$("$PY" "$HERE/schemas.py" h1 "$file.tmp")"
  [ "$got" = "$want" ] || { rm -f "$file.tmp"; die "$module@$version: zip hash $got, expected $want"; }
  mv "$file.tmp" "$file" && echo "$got" > "$file.ok"
  echo "$file"
}
fresh() { [ -f "$1/.complete" ] && [ "$(cat "$1/.complete")" = "$CONVERTER_SUM" ]; }
finish() { echo "$CONVERTER_SUM" > "$1/.complete"; }

K8S_DIR="$SCHEMAS/kubernetes-$K8S_VERSION"
if fresh "$K8S_DIR"; then say "schemas: Kubernetes $K8S_VERSION core kinds cached"; else
  zip="$(fetch_module k8s.io/kubernetes "$K8S_VERSION")"
  rm -rf "$K8S_DIR"
  n="$("$PY" "$HERE/schemas.py" kubernetes "$zip" "$K8S_DIR")"
  finish "$K8S_DIR"; say "schemas: Kubernetes $K8S_VERSION: $n kinds from api/openapi-spec/swagger.json"
fi

KEDA_DIR="$SCHEMAS/keda-$KEDA_VERSION"
if fresh "$KEDA_DIR"; then say "schemas: KEDA $KEDA_VERSION CRDs cached"; else
  zip="$(fetch_module github.com/kedacore/keda/v2 "$KEDA_VERSION")"
  rm -rf "$KEDA_DIR"
  n="$("$PY" "$HERE/schemas.py" crds "$KEDA_DIR" "$zip" config/crd)"
  finish "$KEDA_DIR"; say "schemas: KEDA $KEDA_VERSION: $n CRD versions from config/crd/bases (with config/crd/patches)"
fi

STRIMZI_DIR="$SCHEMAS/strimzi-$STRIMZI_VERSION"
if fresh "$STRIMZI_DIR"; then say "schemas: Strimzi $STRIMZI_VERSION CRDs cached"; else
  command -v "$MVN" >/dev/null 2>&1 || missing "maven ($MVN) downloads io.strimzi:api and io.strimzi:crd-generator"
  JAVA="$(find_java21)" || missing "Java 21+ (Strimzi $STRIMZI_VERSION's CrdGenerator is built for Java 21; set STRIMZI_JAVA)"
  lib="$CACHE/strimzi-$STRIMZI_VERSION/lib"
  if [ ! -f "$lib/.complete" ]; then
    say "Strimzi $STRIMZI_VERSION: downloading io.strimzi:api, crd-generator and their dependencies from Maven"
    rm -rf "$lib" "$lib.tmp"
    "$MVN" -B -q -C -f "$HERE/strimzi/pom.xml" -Dstrimzi.version="$STRIMZI_VERSION" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$lib.tmp" > "$CACHE/strimzi-mvn.log" 2>&1 \
      || { tail -30 "$CACHE/strimzi-mvn.log" >&2; die "maven could not fetch Strimzi $STRIMZI_VERSION (log: $CACHE/strimzi-mvn.log)"; }
    "$MVN" -B -q -C -f "$HERE/strimzi/pom.xml" org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      -Dartifact="io.strimzi:api:$STRIMZI_VERSION:pom" -DoutputDirectory="$lib.tmp" >> "$CACHE/strimzi-mvn.log" 2>&1 \
      || { tail -30 "$CACHE/strimzi-mvn.log" >&2; die "maven could not fetch io.strimzi:api:$STRIMZI_VERSION:pom (log: $CACHE/strimzi-mvn.log)"; }
    touch "$lib.tmp/.complete" && mv "$lib.tmp" "$lib"
  fi
  # the generator's arguments are read from api's own POM (the exec-maven-plugin call that writes
  # packaging/install/cluster-operator/04*-Crd-*.yaml), with the output paths moved into the cache
  crds="$CACHE/strimzi-$STRIMZI_VERSION/crds"
  rm -rf "$crds" && mkdir -p "$crds"
  mapfile -t args < <("$PY" "$HERE/schemas.py" strimzi-args "$lib/api-$STRIMZI_VERSION.pom" "$crds")
  [ "${#args[@]}" -gt 0 ] || die "no CrdGenerator call found in io.strimzi:api:$STRIMZI_VERSION's POM"
  say "Strimzi $STRIMZI_VERSION: generating CRDs with io.strimzi.crdgenerator.CrdGenerator ($("$JAVA" -version 2>&1 | head -1))"
  "$JAVA" -cp "$lib/*" io.strimzi.crdgenerator.CrdGenerator "${args[@]}" >&2 || die "CrdGenerator failed"
  rm -rf "$STRIMZI_DIR"
  n="$("$PY" "$HERE/schemas.py" crds "$STRIMZI_DIR" "$crds"/*.yaml)"
  finish "$STRIMZI_DIR"; say "schemas: Strimzi $STRIMZI_VERSION: $n CRD versions generated from the io.strimzi:api classes"
fi

# --- 3. render and validate -------------------------------------------------------------------------
KC_ARGS=(-strict -summary -output text -n 2 -kubernetes-version "${K8S_VERSION#v}"
  -schema-location "$K8S_DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json"
  -schema-location "$KEDA_DIR/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
  -schema-location "$STRIMZI_DIR/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json")
say "kubeconform: Kubernetes $K8S_VERSION, KEDA $KEDA_VERSION, Strimzi $STRIMZI_VERSION schemas; -strict; resources without a schema fail"

if [ "${#FILES[@]}" -gt 0 ]; then
  "$KUBECONFORM" "${KC_ARGS[@]}" "${FILES[@]}"
  exit $?
fi

if [ -n "$RENDER_DIR" ]; then mkdir -p "$RENDER_DIR"; else
  RENDER_DIR="$(mktemp -d)"; trap 'rm -rf "$RENDER_DIR"' EXIT
fi
failed=()
for t in "${TARGETS[@]}"; do
  name="$(basename "$t")"
  out="$RENDER_DIR/$name.yaml"
  if ! "$KUSTOMIZE" build "$HERE/$t" > "$out"; then say "$t: kustomize build FAILED"; failed+=("$t"); continue; fi
  "$PY" "$HERE/schemas.py" tojson < "$out" > "$RENDER_DIR/$name.json"
  if report="$("$KUBECONFORM" "${KC_ARGS[@]}" "$out" 2>&1)"; then status=ok; else status=FAILED; failed+=("$t"); fi
  printf '%s\n' "$report" | grep -v '^Summary:' | sed "s|^|validate.sh: $t: |" || true
  say "$t: $status: $(printf '%s\n' "$report" | grep '^Summary:' | sed "s|$out|$t|")"
done
if [ "${#failed[@]}" -gt 0 ]; then die "invalid: ${failed[*]}"; fi
say "all valid: ${TARGETS[*]}"
