"""What the outputs share: the sink interface and its runner (`sink`), binding a listening
socket (`listen`), drawing results (`draw`), Foxglove's schema messages
(`foxglove_schema`) and the ROS 2 messages (`ros2msgs`)."""
