package ticket

import (
	"math"
	"testing"
)

func TestFormatAmount(t *testing.T) {
	for _, c := range []struct {
		minor    int64
		currency string
		want     string
	}{
		{0, "CNY", "¥0.00"}, {5, "CNY", "¥0.05"}, {188, "CNY", "¥1.88"}, {100000, "CNY", "¥1,000.00"},
		{123456789, "CNY", "¥1,234,567.89"}, {-433456, "CNY", "-¥4,334.56"}, {99999, "USD", "999.99 USD"},
		{math.MinInt64, "CNY", "-¥92,233,720,368,547,758.08"}, {12, "", "0.12"},
	} {
		if got := FormatAmount(c.minor, c.currency); got != c.want {
			t.Errorf("FormatAmount(%d, %q) = %q, want %q", c.minor, c.currency, got, c.want)
		}
	}
}

func TestMaskUID(t *testing.T) {
	for uid, want := range map[string]string{"1234567": "12****67", "123456": "12****56", "12345": "****5", "7": "****7", "": "****", "12a45678": "****"} {
		if got := string(MaskUID(nil, uid)); got != want {
			t.Errorf("MaskUID(%q) = %q, want %q", uid, got, want)
		}
	}
}
