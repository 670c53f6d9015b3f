package verifier

import "shake/ticket"

// TEMPORARY until the ticket package's Manifest.PerUser and ClaimSigner land on main.
var pendingPerUser = 1

func manifestPerUser(*ticket.Manifest) int { return pendingPerUser }

func (s *Server) claimSigned(*ticket.Claim) bool { return true }
