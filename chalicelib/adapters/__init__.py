"""One module per AWS service; nothing above this layer imports boto3."""
