"""TikTok Business API (custom audiences through the Segment API): request schemas, emulator and contract notes."""
