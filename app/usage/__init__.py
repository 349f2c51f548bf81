"""Token and cost accounting from stored assistant messages."""
