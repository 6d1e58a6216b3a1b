# METADATA
# title: Consent policies
# description: >-
#   The root of the consent policies. Its schema annotation names the reference data (one
#   consent/reference/<name>/data.json holding one key, <name>), so that opa check --strict
#   rejects a misspelt reference-data path as an undefined ref.
# scope: subpackages
# schemas:
#   - data.consent.reference:
#       type: object
#       additionalProperties: false
#       properties:
#         coverage: {type: object, additionalProperties: false, properties: {coverage: {type: object}}}
#         legal_bases: {type: object, additionalProperties: false, properties: {legal_bases: {type: object}}}
#         license_terms: {type: object, additionalProperties: false, properties: {license_terms: {type: object}}}
#         licenses: {type: object, additionalProperties: false, properties: {licenses: {type: object}}}
#         purposes: {type: object, additionalProperties: false, properties: {purposes: {type: object}}}
#         sources: {type: object, additionalProperties: false, properties: {sources: {type: object}}}
package consent
