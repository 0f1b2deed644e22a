"""Face datasets: identity folders, synthetic identities, and (in training) TFRecord/RecordIO readers."""
