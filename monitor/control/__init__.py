"""Live control of what is listened for: commands, the label state they change, the controller."""
