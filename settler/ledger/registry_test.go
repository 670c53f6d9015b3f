package ledger

import (
	"context"
	"errors"
	"testing"
)

// TestRegister records a campaign once, accepts the same registration again (a
// restarted settler) and refuses other figures for the same id, on both backends.
func TestRecordFigures(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := open(t, b.url)
			c := CampaignFigures{Campaign: "reg", Currency: "CNY", Budget: 10000, Tickets: 50}
			if err := l.RecordFigures(ctx, c); err != nil {
				t.Fatal(err)
			}
			if err := l.RecordFigures(ctx, c); err != nil {
				t.Fatalf("same registration again: %v", err)
			}
			for _, bad := range []CampaignFigures{
				{Campaign: "reg", Currency: "CNY", Budget: 10001, Tickets: 50},
				{Campaign: "reg", Currency: "USD", Budget: 10000, Tickets: 50},
				{Campaign: "reg", Currency: "CNY", Budget: 10000, Tickets: 51},
			} {
				if err := l.RecordFigures(ctx, bad); !errors.Is(err, ErrConflict) {
					t.Errorf("RecordFigures(%+v) = %v, want ErrConflict", bad, err)
				}
			}
			for _, bad := range []CampaignFigures{
				{Campaign: "Bad!", Currency: "CNY", Budget: 1, Tickets: 1},
				{Campaign: "ok", Currency: "CNY", Budget: -1, Tickets: 1},
				{Campaign: "ok", Currency: "CNY", Budget: 1, Tickets: 1 << 63},
			} {
				if err := l.RecordFigures(ctx, bad); !errors.Is(err, ErrInvalid) {
					t.Errorf("RecordFigures(%+v) = %v, want ErrInvalid", bad, err)
				}
			}
		})
	}
}
