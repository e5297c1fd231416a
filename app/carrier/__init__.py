"""The local carrier: Twilio's Calls API and the people it rings, for campaigns run locally (`switchboard carrier`)."""
