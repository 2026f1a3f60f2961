#!/usr/bin/env python3
"""Offline JSON schemas for kubeconform, used by deploy/k8s/validate.sh (Python 3.11, stdlib + PyYAML).

  schemas.py h1 ZIP                          the Go module hash (h1:...) of a module zip, as go.sum has it
  schemas.py kubernetes ZIP OUTDIR           per-kind schemas from api/openapi-spec/swagger.json in the
                                             k8s.io/kubernetes module zip: OUTDIR/<kind>[-<group>]-<version>.json
  schemas.py crds OUTDIR ZIP PREFIX          CRDs under PREFIX in a module zip (KEDA: config/crd, bases/ plus
                                             the JSON patches its kustomization.yaml applies)
  schemas.py crds OUTDIR FILE...             CRD YAML files (Strimzi's generated CRDs)
                                             both write OUTDIR/<group>/<kind>_<version>.json per served version
  schemas.py strimzi-args POM OUTDIR         the CrdGenerator arguments in io.strimzi:api's POM, one a line,
                                             with each CRD's output path moved into OUTDIR
  schemas.py tojson < STREAM.yaml            a multi-document YAML stream as one JSON array

Every schema is "standalone strict", the layout kubeconform's -strict expects: references inlined,
additionalProperties: false on every object that lists its properties (unknown fields are errors),
except where Kubernetes itself preserves unknown fields. Descriptions are dropped to keep files small.
Not checked: CEL rules (x-kubernetes-validations), list-map keys, anything only the API server knows.
"""
import base64
import copy
import hashlib
import json
import os
import sys
import zipfile

import yaml

INT_OR_STRING = {'oneOf': [{'type': 'string'}, {'type': 'integer'}]}
QUANTITY = {'oneOf': [{'type': 'string'}, {'type': 'number'}]}
SKIP_KEYS = {'description', 'example', 'externalDocs'}


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(obj, f, separators=(',', ':'), sort_keys=True)
    os.replace(path + '.tmp', path)


def h1(zip_path):
    """golang.org/x/mod/sumdb/dirhash.Hash1 over the zip's files."""
    with zipfile.ZipFile(zip_path) as z:
        lines = []
        for name in sorted(z.namelist()):
            if name.endswith('/'):
                continue
            lines.append(f'{hashlib.sha256(z.read(name)).hexdigest()}  {name}\n')
    return 'h1:' + base64.b64encode(hashlib.sha256(''.join(lines).encode()).digest()).decode()


# --- core Kubernetes kinds, from the Swagger 2.0 spec -------------------------------------------

def kubernetes(zip_path, outdir):
    with zipfile.ZipFile(zip_path) as z:
        name = next(n for n in z.namelist() if n.endswith('/api/openapi-spec/swagger.json'))
        defs = json.loads(z.read(name))['definitions']

    def expand(ref, stack):
        if ref == 'io.k8s.apimachinery.pkg.util.intstr.IntOrString':
            return copy.deepcopy(INT_OR_STRING)
        if ref == 'io.k8s.apimachinery.pkg.api.resource.Quantity':
            return copy.deepcopy(QUANTITY)
        if ref in stack:  # a recursive type (JSONSchemaProps): accept anything below this point
            return {}
        return convert(defs[ref], stack | {ref})

    def convert(node, stack):
        if isinstance(node, list):
            return [convert(x, stack) for x in node]
        if not isinstance(node, dict):
            return node
        if '$ref' in node:
            return expand(node['$ref'].rsplit('/', 1)[-1], stack)
        if node.get('format') == 'int-or-string':
            return copy.deepcopy(INT_OR_STRING)
        out = {}
        for k, v in node.items():
            if k in SKIP_KEYS or k.startswith('x-'):
                continue
            if k == 'properties':
                out[k] = {p: convert(s, stack) for p, s in v.items()}
            elif k in ('items', 'additionalProperties', 'not', 'allOf', 'anyOf', 'oneOf'):
                out[k] = convert(v, stack)
            else:
                out[k] = v
        if 'properties' in out and 'additionalProperties' not in out:
            out['additionalProperties'] = False
        return out

    count = 0
    for ref, d in defs.items():
        for gvk in d.get('x-kubernetes-group-version-kind', []):
            if gvk['kind'] in ('DeleteOptions', 'WatchEvent'):
                continue  # listed under every group; not resources anyone applies
            schema = expand(ref, frozenset())
            # kubeconform's KindSuffix: "-<first label of the group>-<version>", or "-<version>" for core
            group = gvk['group'].split('.')[0]
            fname = f"{gvk['kind']}{'-' + group if group else ''}-{gvk['version']}".lower() + '.json'
            schema['$schema'] = 'http://json-schema.org/draft-04/schema#'
            write_json(os.path.join(outdir, fname), schema)
            count += 1
    return count


# --- CustomResourceDefinitions, from openAPIV3Schema --------------------------------------------

def crd_node(node):
    if isinstance(node, list):
        return [crd_node(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in SKIP_KEYS or k.startswith('x-kubernetes-') or k == 'nullable':
            continue
        if k == 'properties':
            out[k] = {p: crd_node(s) for p, s in v.items()}
        elif k in ('items', 'additionalProperties', 'not', 'allOf', 'anyOf', 'oneOf'):
            out[k] = crd_node(v)
        else:
            out[k] = v
    if node.get('x-kubernetes-int-or-string'):
        out.pop('type', None)
        if 'anyOf' not in out and 'oneOf' not in out:
            out.update(copy.deepcopy(INT_OR_STRING))
    if node.get('nullable'):
        if isinstance(out.get('type'), str):
            out['type'] = [out['type'], 'null']
        if 'enum' in out:
            out['enum'] = list(out['enum']) + [None]
    if node.get('x-kubernetes-embedded-resource'):
        props = out.setdefault('properties', {})
        props.setdefault('apiVersion', {'type': 'string'})
        props.setdefault('kind', {'type': 'string'})
        props.setdefault('metadata', {'type': 'object'})
    if 'properties' in out and 'additionalProperties' not in out and not node.get('x-kubernetes-preserve-unknown-fields'):
        out['additionalProperties'] = False
    return out


def pointer(doc, path):
    parts = [p.replace('~1', '/').replace('~0', '~') for p in path.lstrip('/').split('/')]
    for p in parts[:-1]:
        doc = doc[int(p)] if isinstance(doc, list) else doc[p]
    return doc, parts[-1]


def json_patch(doc, ops):
    for op in ops:
        parent, key = pointer(doc, op['path'])
        if isinstance(parent, list):
            key = len(parent) if key == '-' else int(key)
        if op['op'] == 'remove':
            del parent[key]
        elif op['op'] == 'add' and isinstance(parent, list):
            parent.insert(key, op['value'])
        elif op['op'] in ('add', 'replace'):
            parent[key] = op['value']
        else:
            raise SystemExit(f"schemas.py: unsupported JSON patch op {op['op']}")


def crds(outdir, docs):
    count = 0
    for crd in docs:
        if not crd or crd.get('kind') != 'CustomResourceDefinition':
            continue
        group, kind = crd['spec']['group'], crd['spec']['names']['kind']
        for v in crd['spec']['versions']:
            if not v.get('served', True):
                continue
            schema = crd_node(v['schema']['openAPIV3Schema'])
            schema['$schema'] = 'http://json-schema.org/draft-04/schema#'
            write_json(os.path.join(outdir, group, f"{kind.lower()}_{v['name']}.json"), schema)
            count += 1
    return count


def crds_from_zip(zip_path, prefix):
    """CRDs in <module>/<prefix>/bases, with the JSON patches <prefix>/kustomization.yaml applies to them."""
    with zipfile.ZipFile(zip_path) as z:
        first = z.namelist()[0]  # "<module>@<version>/<path>"; the module path has slashes of its own
        root = first[:first.index('/', first.index('@'))] + '/' + prefix.strip('/') + '/'
        docs = [yaml.safe_load(z.read(n)) for n in sorted(z.namelist()) if n.startswith(root + 'bases/') and n.endswith('.yaml')]
        kust = root + 'kustomization.yaml'
        if kust in z.namelist():
            by_name = {d['metadata']['name']: d for d in docs if d}
            for p in yaml.safe_load(z.read(kust)).get('patches') or []:
                target = by_name.get((p.get('target') or {}).get('name'))
                if target is not None and p.get('path'):
                    json_patch(target, yaml.safe_load(z.read(root + p['path'])))
    return docs


def strimzi_args(pom, outdir):
    """Strimzi's api/pom.xml runs the generator with exec-maven-plugin: reuse those arguments."""
    import xml.etree.ElementTree as ET
    ns = {'m': 'http://maven.apache.org/POM/4.0.0'}
    main_class = 'io.strimzi.crdgenerator.CrdGenerator'
    for args in ET.parse(pom).getroot().iterfind('.//m:execution/m:configuration/m:arguments', ns):
        values = [(a.text or '').strip() for a in args.iterfind('m:argument', ns)]
        if main_class not in values:
            continue
        out = []
        for v in values[values.index(main_class) + 1:]:
            if '=' in v and v.split('=', 1)[0].startswith('io.strimzi.'):
                cls, path = v.split('=', 1)
                v = f"{cls}={os.path.join(outdir, path.replace('${file.separator}', '/').rsplit('/', 1)[-1])}"
            elif '${' in v:
                raise SystemExit(f'schemas.py: unexpected property in a CrdGenerator argument: {v}')
            out.append(v)
        return out
    raise SystemExit(f'schemas.py: no {main_class} call in {pom}')


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ''
    if cmd == 'h1' and len(argv) == 3:
        print(h1(argv[2]))
    elif cmd == 'kubernetes' and len(argv) == 4:
        print(kubernetes(argv[2], argv[3]))
    elif cmd == 'crds' and len(argv) == 5 and argv[3].endswith('.zip'):
        print(crds(argv[2], crds_from_zip(argv[3], argv[4])))
    elif cmd == 'crds' and len(argv) >= 4:
        docs = []
        for f in argv[3:]:
            with open(f) as fh:
                docs.extend(yaml.safe_load_all(fh))
        print(crds(argv[2], docs))
    elif cmd == 'strimzi-args' and len(argv) == 4:
        print('\n'.join(strimzi_args(argv[2], argv[3])))
    elif cmd == 'tojson' and len(argv) == 2:
        json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout, indent=1)
        sys.stdout.write('\n')
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main(sys.argv)
