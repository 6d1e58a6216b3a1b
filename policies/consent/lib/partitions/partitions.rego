# METADATA
# title: Partitions with a manifest
# description: >-
#   The partitions whose claims the consent and provenance rules judge. A partition without a
#   usable manifest is reported by the manifest_invalid rule alone.
package consent.lib.partitions

# METADATA
# description: Partition index → manifest, for each partition of the input that has a manifest.
manifests := {index: partition.manifest |
	some index, partition in input.partitions
	is_object(partition.manifest)
}
