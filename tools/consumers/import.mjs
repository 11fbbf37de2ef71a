// Import a file kmod-audit wrote with the real consumers' own parsers, and print what
// they made of it as JSON on stdout (the tests assert on it).
//
//   node import.mjs cklb FILE   STIG Manager's reviewsFromCklb (STIG Viewer 3 checklist)
//   node import.mjs ckl FILE    STIG Manager's reviewsFromCkl (STIG Viewer 2 checklist)
//   node import.mjs hdf FILE    inspecjs: parse the HDF and classify every control
//
// Exit 0 with the JSON; exit 1 with the parser's error on stderr when it refuses the file.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { reviewsFromCkl, reviewsFromCklb } from '@nuwcdivnpt/stig-manager-client-modules'

const require = createRequire(import.meta.url)
const [format, file] = process.argv.slice(2)
// As the browser's file reading (TextDecoder) does, a UTF-8 byte order mark is dropped.
const data = readFileSync(file, 'utf8').replace(/^\uFEFF/, '')

// What a STIG Manager collection passes by default, except that unreviewed rules are
// always imported (as notchecked), so that the tests see every rule.
const importOptions = {
  autoStatus: 'saved',
  unreviewed: 'always',
  unreviewedCommented: 'notchecked',
  emptyDetail: 'replace',
  emptyComment: 'ignore',
  allowCustom: true
}
const fieldSettings = {
  detail: { enabled: 'always', required: 'always' },
  comment: { enabled: 'findings', required: 'findings' }
}

function checklist (parse) {
  return parse({ data, importOptions, fieldSettings, allowAccept: false, sourceRef: file })
}

function hdf () {
  const inspecjs = require('inspecjs')
  const evaluation = inspecjs.convertFileContextual(data)
  if (!inspecjs.isContextualizedEvaluation(evaluation)) {
    throw new Error('inspecjs read the file as a profile, not as an evaluation')
  }
  return {
    platform: evaluation.data.platform,
    profiles: evaluation.contains.map((profile) => ({
      name: profile.data.name,
      controls: profile.contains.map((control) => ({
        id: control.data.id,
        status: control.hdf.status,
        severity: control.hdf.severity,
        segments: (control.hdf.segments || []).map((s) => s.status),
        message: control.hdf.message
      }))
    }))
  }
}

try {
  let result
  if (format === 'cklb') result = checklist(reviewsFromCklb)
  else if (format === 'ckl') result = checklist(reviewsFromCkl)
  else if (format === 'hdf') result = hdf()
  else throw new Error(`unknown format ${format}; use cklb, ckl or hdf`)
  process.stdout.write(JSON.stringify(result) + '\n')
} catch (error) {
  process.stderr.write(`import.mjs: ${format} ${file}: ${error.message}\n`)
  process.exit(1)
}
